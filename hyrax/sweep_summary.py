"""The end of a multirun, as its MLflow parent run shows it: the best trial (its parameters and metrics
under `best.*`, its child run tagged `hyrax.best=true` and linked from the description), a table of
trials sorted by objective, and the artifacts `trials.csv` and `report.html`.

Grids and Optuna searches alike: the rows come from the child runs, so what the table shows is what
MLflow holds.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyrax import tags
from hyrax.run_names import short_keys
from hyrax.run_notes import sweep_note
from hyrax.search.html_report import REPORT_FILE
from hyrax.sweep_record import SPACE_PREFIX

log = logging.getLogger("hyrax")
MAX_CHILDREN = 5000  # child runs one search returns: more than any sweep here runs
TRIALS_FILE = "trials.csv"
BEST_PREFIX = "best."


def child_runs(client: Any, info: Mapping[str, str]) -> list[Any]:
    """All child runs of a sweep's parent run."""
    return client.search_runs(
        [info["experiment_id"]],
        filter_string=f"tags.`{tags.PARENT_RUN_ID}` = '{info['run_id']}'",
        max_results=MAX_CHILDREN,
    )


def varying_keys(children: Sequence[Any], space: Sequence[str] = ()) -> list[str]:
    """The parameters that tell trials apart: the searched keys, then any other that differs."""
    keys = {k for run in children for k in run.data.params}
    varying = [k for k in space if k in keys]
    for key in sorted(keys - set(varying)):
        if len({run.data.params.get(key) for run in children}) > 1:
            varying.append(key)
    return varying


def trial_rows(children: Sequence[Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    """One row per child run: its trial number, name, state, objective, parameters and final metrics."""
    rows = []
    for run in children:
        found = run.data.tags
        metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith("system/")}
        rows.append(
            {
                "trial": found.get(tags.TRIAL_NUMBER, ""),
                "name": run.info.run_name or run.info.run_id,
                "state": found.get(tags.OPTUNA_STATE) or run.info.status,
                "objective": metrics.get("objective"),
                **{c: run.data.params.get(c, "") for c in columns},
                "metrics": metrics,
                "run_id": run.info.run_id,
                "status": run.info.status,
            }
        )
    return rows


def sorted_rows(rows: list[dict[str, Any]], maximize: bool) -> list[dict[str, Any]]:
    """Best objective first; trials without one (failed, pruned, running) last, by trial number."""

    def order(row: dict[str, Any]) -> tuple[int, float, str]:
        value = row["objective"]
        if not isinstance(value, float) or math.isnan(value) or row["status"] != "FINISHED":
            return (1, 0.0, str(row["trial"]).zfill(8))
        return (0, -value if maximize else value, "")

    return sorted(rows, key=order)


def write_trials_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> Path:
    """`trials.csv`: one line per trial with its parameters and every final metric."""
    metric_names = sorted({m for row in rows for m in row["metrics"]})
    header = ["trial", "name", "state", "objective", *columns, *metric_names, "run_id"]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            writer.writerow(
                [row["trial"], row["name"], row["state"], _blank(row["objective"])]
                + [row.get(c, "") for c in columns]
                + [_blank(row["metrics"].get(m)) for m in metric_names]
                + [row["run_id"]]
            )
    return path


def _blank(value: Any) -> Any:
    return "" if value is None else value


def summarise(client: Any, info: Mapping[str, str], sweep_dir: Path, command: str, objective: str) -> None:
    """Write the sweep's summary onto its parent run (never fails the sweep: problems are logged)."""
    parent = client.get_run(info["run_id"])
    space = [k.removeprefix(SPACE_PREFIX) for k in parent.data.params if k.startswith(SPACE_PREFIX)]
    children = child_runs(client, info)
    columns = varying_keys(children, space)
    maximize = info["direction"].startswith("max")
    rows = sorted_rows(trial_rows(children, columns), maximize)
    finished = [r for r in rows if r["status"] == "FINISHED" and isinstance(r["objective"], float)]
    best = finished[0] if finished else None
    client.set_tag(info["run_id"], tags.N_CHILDREN, str(len(children)))
    if best is not None:
        _record_best(client, info["run_id"], best, columns, children)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    client.log_artifact(info["run_id"], str(write_trials_csv(rows, columns, sweep_dir / TRIALS_FILE)))
    report = sweep_dir / REPORT_FILE
    if not report.is_file():  # an Optuna sweep wrote its own, from the study itself
        from hyrax.search.html_report import report_from_rows

        report_from_rows(rows, columns, maximize, info.get("metric", "objective"), report)
    if report.is_file():
        client.log_artifact(info["run_id"], str(report))
    names = short_keys(columns)
    shown = [{**r, **{names[c]: r.get(c, "") for c in columns}} for r in rows]
    note = sweep_note(command, objective, info["experiment_id"], shown, [names[c] for c in columns], best)
    client.set_tag(info["run_id"], tags.NOTE, note)


def _record_best(
    client: Any, parent_id: str, best: Mapping[str, Any], columns: Sequence[str], children: Sequence[Any]
) -> None:
    """`best.*` parameters and metrics on the parent, and `hyrax.best=true` on the best child alone."""
    from mlflow.exceptions import MlflowException

    client.log_metric(parent_id, "best_objective", best["objective"])
    for name, value in best["metrics"].items():
        client.log_metric(parent_id, f"{BEST_PREFIX}{name}", value)
    for key in columns:
        try:
            client.log_param(parent_id, f"{BEST_PREFIX}{key}", str(best.get(key, "")))
        except MlflowException:  # a resumed sweep found a new best: parameters cannot change
            client.set_tag(parent_id, f"{BEST_PREFIX}{key}", str(best.get(key, "")))
    client.set_tag(parent_id, tags.BEST_RUN_ID, best["run_id"])
    best_run = next(r for r in children if r.info.run_id == best["run_id"])
    client.set_tag(parent_id, tags.BEST_OVERRIDES, best_run.data.tags.get(tags.OVERRIDES, ""))
    for run in children:
        if run.info.run_id == best["run_id"]:
            client.set_tag(run.info.run_id, tags.BEST, "true")
        elif tags.BEST in run.data.tags:
            client.delete_tag(run.info.run_id, tags.BEST)
