"""Where a run is in the MLflow UI: its page, its experiment's runs page and the `mlflow ui` command.

A tracking server is its own UI. For a database or folder store, the UI is `mlflow ui` started on
its default address, http://127.0.0.1:5000, with the store as its backend.
"""

from __future__ import annotations

import shlex

from hyrax.redact import redact
from hyrax.tracking import is_server

LOCAL_UI = "http://127.0.0.1:5000"
# The UI opens in its GenAI view unless told otherwise; runs belong to its model-training view.
TRAINING_VIEW = "?workflowType=machine_learning"


def ui_base(uri: str) -> str:
    """The address of the UI that shows the store `uri`."""
    return redact(uri).rstrip("/") if is_server(uri) else LOCAL_UI


def run_path(experiment_id: str, run_id: str) -> str:
    """A run's page inside the UI (the part after the address)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{ui_base(uri)}/{run_path(experiment_id, run_id)}{TRAINING_VIEW}"


def runs_page_url(uri: str, experiment_id: str) -> str:
    """The experiment's runs page (its table of runs), not the experiment's overview."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs{TRAINING_VIEW}"


def ui_command(uri: str) -> str | None:
    """The command that starts a UI for the store `uri` (None for a server: it is its own UI)."""
    if is_server(uri):
        return None
    return f"mlflow ui --backend-store-uri {shlex.quote(redact(uri))}"


def where_lines(uri: str, experiment_id: str, run_id: str, what: str = "run") -> list[str]:
    """The lines the log ends with: the run's page, the experiment's runs and how to open the UI."""
    lines = [
        f"MLflow {what}: {run_url(uri, experiment_id, run_id)}",
        f"MLflow runs of this experiment: {runs_page_url(uri, experiment_id)}",
    ]
    command = ui_command(uri)
    if command:
        lines.append(f"Open the MLflow UI with: {command}")
    return lines
