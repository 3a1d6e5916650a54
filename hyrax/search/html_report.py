"""`report.html`: a sweep's interactive plots (Optuna's plotly figures) in one self-contained page.

Written by an Optuna sweep from its study, and for a grid from its child runs (an in-memory study of
the same trials), so every sweep's parent run carries one. Axes name the objective's metric. The
page embeds plotly.js, so it opens offline and inside MLflow's artifact viewer. Writing it never
fails a sweep: problems are logged and the page is left out.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("hyrax")
REPORT_FILE = "report.html"
MIN_TRIALS_FOR_IMPORTANCE = 4


def target_names(metric: str, count: int) -> list[str]:
    """The names of a multi-objective study's values: `metric` lists them as `a, b`."""
    names = [name.strip() for name in metric.split(",")]
    return names if len(names) == count else [f"{metric} {i}" for i in range(count)]


def write_report(study: Any, path: Path, metric: str, title: str | None = None) -> Path | None:
    """Write the study's plots into one HTML page at `path`; None when there is nothing to plot."""
    try:
        return _write(study, Path(path), metric, title or f"Study {study.study_name}")
    except Exception as err:
        log.warning("Could not write %s: %s: %s", Path(path).name, type(err).__name__, err)
        return None


def _figures(study: Any, metric: str) -> dict[str, Callable[[], Any]]:
    import optuna
    from optuna import visualization as vis
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(study.directions) > 1:
        names = target_names(metric, len(study.directions))
        return {"Pareto front": lambda: vis.plot_pareto_front(study, target_names=names)}
    params = {name for t in complete for name in t.params}
    wanted: dict[str, Callable[[], Any]] = {
        "Optimization history": lambda: vis.plot_optimization_history(study, target_name=metric)
    }
    if params:
        wanted["Parallel coordinates"] = lambda: vis.plot_parallel_coordinate(study, target_name=metric)
        wanted["Slice"] = lambda: vis.plot_slice(study, target_name=metric)
    if len(params) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        wanted["Parameter importances"] = lambda: vis.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target_name=metric
        )
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        wanted["Intermediate values (per epoch)"] = lambda: vis.plot_intermediate_values(study)
    return wanted


def _write(study: Any, path: Path, metric: str, title: str) -> Path | None:
    import optuna
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return None
    parts, first = [], True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, make in _figures(study, metric).items():
            try:
                figure = make()
            except Exception as err:
                log.warning("Could not plot %s: %s: %s", name, type(err).__name__, err)
                continue
            figure.update_layout(title=name)
            parts.append(figure.to_html(full_html=False, include_plotlyjs=first))
            first = False
    if not parts:
        return None
    body = "\n".join(f"<section>{p}</section>" for p in parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>"
        f"<p>Objective: {html.escape(metric)}</p>{body}</body></html>"
    )
    log.info("Report: %s", path)
    return path


def report_from_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], maximize: bool, metric: str, path: Path
) -> Path | None:
    """The report of a sweep without a study (a grid): its finished trials as an in-memory study."""
    try:
        study = _study_of(rows, columns, maximize)
    except Exception as err:
        log.warning("Could not gather the trials for %s: %s", Path(path).name, err)
        return None
    return write_report(study, path, metric, title="Sweep report")


def _study_of(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], maximize: bool) -> Any:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    done = [r for r in rows if r["status"] == "FINISHED" and isinstance(r["objective"], float)]
    distributions: dict[str, Any] = {}
    for key in columns:
        values = [r.get(key, "") for r in done]
        numbers = _floats(values)
        if numbers is not None and min(numbers) < max(numbers):
            distributions[key] = FloatDistribution(min(numbers), max(numbers))
        elif len(set(values)) > 1:
            distributions[key] = CategoricalDistribution(sorted(set(values)))
    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        study = optuna.create_study(direction="maximize" if maximize else "minimize")
    finally:
        optuna.logging.set_verbosity(quiet)
    for row in done:
        params = {
            k: (float(row[k]) if isinstance(d, FloatDistribution) else row[k])
            for k, d in distributions.items()
        }
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=row["objective"])
        )
    return study


def _floats(values: Sequence[Any]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None
