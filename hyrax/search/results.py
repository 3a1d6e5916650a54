"""The end of an Optuna sweep: the best trial(s) in the log, `optimization_results.yaml` and plots."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger("hyrax")

RESULTS_FILE = "optimization_results.yaml"


def write_results(
    study: optuna.Study,
    sweep_dir: Path,
    summary: Mapping[str, Any] | None = None,
    plots: bool = True,
    metric: str = "objective",
) -> None:
    """Log the best trial(s); write `optimization_results.yaml` and (if `plots`) `plots/*.png` and
    `report.html` into `sweep_dir`, their axes named `metric`. `summary` (why the sweep stopped, the
    compute it used) is logged and written too.
    """
    results: dict[str, object] = {"name": "optuna", "study_name": study.study_name}
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name in counts:
            counts[trial.state.name] += 1
    log.info("Finished trials: %s", counts)
    if len(study.directions) == 1:
        best = _best_trial(study)
        results["best_params"] = dict(best.params) if best else None
        results["best_value"] = best.value if best else None
        log.info("Best parameters: %s", results["best_params"])
        log.info("Best value: %s", results["best_value"])
    else:
        best_trials = study.best_trials
        results["solutions"] = [
            {"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in best_trials
        ]
        log.info("Number of Pareto solutions: %d", len(best_trials))
        for t in best_trials:
            log.info("    Values: %s, Params: %s", t.values, t.params)
    if summary:
        results.update(summary)
        log.info(
            "Sweep stopped: %s (%s trial-seconds in %s s)",
            summary.get("stopped_because"),
            summary.get("trial_seconds"),
            summary.get("wall_seconds"),
        )
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
    if plots:
        from hyrax.search.html_report import REPORT_FILE, write_report  # plotly, matplotlib only now
        from hyrax.search.plots import PLOTS_DIR, write_plots

        write_plots(study, sweep_dir / PLOTS_DIR, metric)
        write_report(study, sweep_dir / REPORT_FILE, metric, f"Study {study.study_name}")


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        log.warning("No trial completed: there is no best trial.")
        return None
