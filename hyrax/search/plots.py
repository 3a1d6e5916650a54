"""PNG plots of a finished study, written into `<sweep dir>/plots/` when an Optuna sweep ends.

Single objective:

- `optimization_history.png`: each trial's value and the best so far;
- `param_importances.png`: how much each parameter explains the value (fANOVA, seeded), only
  with at least 2 parameters and `MIN_TRIALS_FOR_IMPORTANCE` completed trials;
- `slice.png`: the value against each parameter;
- `intermediate_values.png`: the per-epoch curves, when trials reported any (pruned ones end early).

Multi-objective (2 or 3 objectives): `pareto_front.png` instead.

Plotting never fails a sweep: a plot that cannot be drawn is logged as a warning and skipped.
matplotlib is imported here only when a sweep ends, with the non-interactive Agg backend.

For an interactive view, optuna-dashboard (https://github.com/optuna/optuna-dashboard)
(`pip install optuna-dashboard`) reads the study while it runs or afterwards. With the default
journal storage: `optuna-dashboard <sweep dir>/optuna.journal` (a file path is opened as a
journal file storage); with `hydra.sweeper.storage=sqlite:///study.db`:
`optuna-dashboard sqlite:///study.db`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("hyrax")

PLOTS_DIR = "plots"
# fANOVA on fewer completed trials says little and may fail.
MIN_TRIALS_FOR_IMPORTANCE = 4


def write_plots(study: optuna.Study, out_dir: Path, metric: str = "Objective Value") -> list[Path]:
    """Write the study's plots as PNG files into `out_dir`, the value axes named `metric`; returns the
    files written.

    Never raises: failures are logged as warnings.
    """
    try:
        return _write_plots(study, Path(out_dir), metric)
    except Exception as err:
        log.warning("Could not write the study's plots: %s: %s", type(err).__name__, err)
        return []


def _write_plots(study: optuna.Study, out_dir: Path, metric: str) -> list[Path]:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # switching later would close the caller's figures
        matplotlib.use("Agg")
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    from hyrax.search.html_report import target_names

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.warning("No trial completed: no plots to write.")
        return []
    wanted: dict[str, Callable[[], Any]] = {}
    if len(study.directions) > 1:
        if len(study.directions) in (2, 3):
            names = target_names(metric, len(study.directions))
            wanted["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=names)
        else:
            log.info("No Pareto front plot for %d objectives (2 or 3 only).", len(study.directions))
    else:
        params = {name for t in complete for name in t.params}
        wanted["optimization_history"] = lambda: vis.plot_optimization_history(study, target_name=metric)
        if len(params) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
            # Seeded: the same study gives the same plot. fANOVA needs scikit-learn (MLflow brings it).
            wanted["param_importances"] = lambda: vis.plot_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target_name=metric
            )
        if params:
            wanted["slice"] = lambda: vis.plot_slice(study, target_name=metric)
        if any(t.intermediate_values for t in trials):
            wanted["intermediate_values"] = lambda: vis.plot_intermediate_values(study)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # matplotlib logs at INFO for every categorical axis of numbers-as-strings (choice(16, 64)).
    category_log = logging.getLogger("matplotlib.category")
    level = category_log.level
    category_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for name, plot in wanted.items():
                path = out_dir / f"{name}.png"
                try:
                    _save(plot(), path)
                except Exception as err:
                    log.warning("Could not plot %s: %s: %s", name, type(err).__name__, err)
                    continue
                written.append(path)
    finally:
        category_log.setLevel(level)
    if written:
        log.info("Plots: %s in %s", ", ".join(p.name for p in written), out_dir)
    return written


def _save(axes: Any, path: Path) -> None:
    """Save the figure that `axes` (an Axes, or an array of them) belongs to, then close it."""
    import matplotlib.pyplot as plt

    first = axes.flat[0] if hasattr(axes, "flat") else axes
    figure = first.get_figure()
    try:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
