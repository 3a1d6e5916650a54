"""A bad Optuna sweep config, run for real: exit code 2, one message naming the key, and nothing created
(no study storage, no `multirun.yaml`). Through `hyrax-run -m` and through the tiny app.

The whole catalogue of bad configs is checked in process in test_checks.py; these runs show that the
checks come before anything is created, and that the message reaches the user without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hyraxtest import user_error
from studies import open_study, sweep_files

from hyrax.search.storage import open_storage

pytestmark = pytest.mark.slow  # every test here runs a sweep command in a subprocess


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (
            ["sweep=grid", "optimizer.lr=interval(1e-3, 1e-2)"],
            [
                "Error in optimizer.lr",
                "grid sampler needs discrete parameters",
                "Fix: give optimizer.lr choice",
            ],
        ),
        (
            ["sweep=lr_search", "optimizer.lr=tag(foo, interval(1e-4, 1e-1))"],
            ["Error in optimizer.lr", "unknown tag foo", "Fix: write tag(log, interval(low, high))"],
        ),
        (
            ["hydra/sweeper=optuna", "optimizer.lr=tag(log, choice(0.1, 0.01))"],
            ["Error in optimizer.lr", "applies to interval(...) only"],
        ),
    ],
)
def test_hyrax_run_refuses_a_bad_search_space(hyrax_run, tmp_path: Path, overrides, needles) -> None:
    proc = hyrax_run("-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    user_error(proc, *needles)
    assert sweep_files(tmp_path) == []


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["hydra/sweeper/sampler=grid"], "Error in hydra.sweeper.params.x: the grid sampler"),
        (["hydra.sweeper.params.y='tag(log)'"], "Error in hydra.sweeper.params.y: cannot parse"),
        (["x=tag(log, choice(a,b))"], "Error in x: tag(log, ...)"),
        (["hydra.sweeper.direction=up"], "Error in hydra.sweeper.direction"),
        (["hydra.sweeper.n_jobs=0"], "Error in hydra.sweeper.n_jobs"),
        (["hydra.sweeper.max_failure_rate=2"], "Error in hydra.sweeper.max_failure_rate"),
        (["hydra.sweeper.sampler._target_=optuna.samplers.Nope"], "Error in hydra.sweeper.sampler._target_"),
        (
            ["hydra.sweeper.custom_search_space=nowhere.configure"],
            "Error in hydra.sweeper.custom_search_space",
        ),
        (["hydra.sweeper.enqueue_trials=[{w:1.0}]"], "Error in hydra.sweeper.enqueue_trials"),
    ],
)
def test_the_app_refuses_a_bad_sweep_before_creating_anything(app, overrides, needle) -> None:
    user_error(app.run(*overrides, check=False), needle, "Fix: ")
    assert sweep_files(app.workdir) == [] and not app.sweep_dir.exists()


def test_a_bad_search_space_creates_no_sqlite_study(app) -> None:
    db = app.workdir / "study.db"
    proc = app.run(f"hydra.sweeper.storage=sqlite:///{db}", "x=range(0,5,step=0)", check=False)
    user_error(proc, "Error in x: 'x=range(0,5,step=0)' is not a valid range")
    assert not db.exists() and sweep_files(app.workdir) == []


def test_a_study_with_other_directions_is_refused_and_left_alone(app) -> None:
    shared = app.workdir / "shared.journal"
    optuna.create_study(study_name="quadratic", direction="maximize", storage=open_storage(str(shared)))
    proc = app.run(f"hydra.sweeper.storage={shared}", check=False)
    user_error(proc, "Error in hydra.sweeper.direction", "exists with directions ['maximize']")
    assert "Fix: write hydra.sweeper.direction=maximize to continue it" in proc.stderr
    study = open_study(shared)
    assert study.trials == [] and [d.name for d in study.directions] == ["MAXIMIZE"]
    assert not (app.sweep_dir / "multirun.yaml").exists()
