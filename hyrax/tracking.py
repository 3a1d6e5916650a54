"""The MLflow store a run writes to: which one, reaching it, opening it, and its experiment.

The tracking URI is, in this order: `mlflow.tracking_uri` when set (on the command line, in a
config file), else `MLFLOW_TRACKING_URI`, else `sqlite:///<launch dir>/mlflow.db`. A tracking
server is contacted once up front: one that does not answer is an error within
`FIRST_CONTACT_S` seconds, not after MLflow's minutes of retries.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyrax.errors import HyraxError
from hyrax.locks import sqlite_lock
from hyrax.redact import redact
from hyrax.tags import EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING, MAX_PARAM_LENGTH, MAX_PARAMS_PER_BATCH

log = logging.getLogger("hyrax")
URI_ENV = "MLFLOW_TRACKING_URI"
SUPPRESS_LINKS_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
FIRST_CONTACT_S = 5.0  # the first request to a tracking server fails within this (plus start-up)
# MLflow's own retries of each request (its defaults wait up to minutes); Hyrax retries what
# fails on top (see `hyrax.tracker`). A user's own setting of these variables wins.
REQUEST_RETRY_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """`mlflow.tracking_uri` when set, else `MLFLOW_TRACKING_URI`, else `sqlite:///<launch dir>/mlflow.db`."""
    return configured or os.environ.get(URI_ENV) or f"sqlite:///{launch_dir.resolve()}/mlflow.db"


def is_server(uri: str) -> bool:
    """Whether `uri` names a tracking server (HTTP), rather than a database or a folder."""
    return urllib.parse.urlsplit(uri).scheme in ("http", "https")


def reach_server(uri: str, within: float = FIRST_CONTACT_S) -> None:
    """Return once the tracking server answers (any HTTP status); `HyraxError` when it does not, in time."""
    import urllib.error  # here, not at the top: urllib.request takes ~40 ms to import, needed only here
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    netloc = f"[{netloc}]" if ":" in netloc else netloc
    if parts.port:
        netloc += f":{parts.port}"
    probe = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        try:
            urllib.request.urlopen(probe, timeout=max(0.5, min(3.0, left))).close()
            return
        except urllib.error.HTTPError:
            return  # it answered: authentication and the rest are MLflow's to report
        except (OSError, ValueError) as err:
            if time.monotonic() + 0.5 >= deadline:
                raise HyraxError(
                    f"the MLflow tracking server at {redact(uri)} did not answer within {within:g} s: "
                    f"{getattr(err, 'reason', err)}",
                    key="mlflow.tracking_uri",
                    fix="start the server (or check the address), set mlflow.tracking_uri / "
                    "MLFLOW_TRACKING_URI to one that answers, or set mlflow.enabled=false",
                ) from err
            time.sleep(0.5)


@functools.lru_cache(maxsize=8)
def client_for(uri: str) -> Any:
    """An MLflow client for `uri` with its store ready (opening a store is slow: one per process and URI).

    Processes that open a new SQLite store at the same moment (jobs or sweep workers started
    together) would race on creating its tables; a lock file next to the database serialises that.
    """
    if is_server(uri):
        reach_server(uri)
        for name, value in REQUEST_RETRY_ENV.items():
            os.environ.setdefault(name, value)
        if redact(uri) != uri:  # MLflow prints "View run at <uri>" as given, password and all
            os.environ[SUPPRESS_LINKS_ENV] = "true"
    from mlflow.tracking import MlflowClient

    with sqlite_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates or migrates the schema
    return client


def ensure_experiment(client: Any, name: str, uri: str, launch_dir: Path) -> str:
    """The id of experiment `name`, created when missing (artifacts next to an SQLite store), marked as
    model training so that the MLflow UI opens it on its runs, not on the GenAI overview."""
    found = client.get_experiment_by_name(name)
    if found is None:
        experiment_id = _create_experiment(client, name, uri, launch_dir)
    else:
        experiment_id = found.experiment_id
    if found is None or EXPERIMENT_KIND not in found.tags:  # a kind the user chose stays
        try:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)
        except Exception as err:  # processes starting together set it at once: one of them wins
            log.debug("experiment %s: %s not set here (%s)", name, EXPERIMENT_KIND, err)
    return experiment_id


def _create_experiment(client: Any, name: str, uri: str, launch_dir: Path) -> str:
    location = (launch_dir.resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    with sqlite_lock(uri):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # another process (on another host: no lock there) created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as `a.b.c -> value` strings, as MLflow params (`log_params` masks secrets)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches of MLflow's per-call limit (secrets masked)."""
    from mlflow.entities import Param

    items = [Param(k, redact(str(v))[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])
