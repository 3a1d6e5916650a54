"""The sweep presets in sweeps/: each composes into a valid Optuna sweep; demo and hyperband run for real.

The real runs are `hyrax-run -m sweep=NAME` subprocesses in a temp dir (MLFLOW_TRACKING_URI removed),
reading back the study from the journal file the sweeper writes into the sweep dir.
"""

from __future__ import annotations

import logging

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hyraxtest import ok
from omegaconf import OmegaConf
from optuna.trial import TrialState
from studies import open_study

from hyrax.config import builtin_dir, register_configs
from hyrax.search import builders
from hyrax.search.checks import check_sweep
from hyrax.search.config import register_configs as register_sweeper_configs
from hyrax.search.plots import write_plots
from hyrax.search.results import RESULTS_FILE
from hyrax.search.space import parse_search_space
from hyrax.search.storage import JOURNAL_FILE

PRESETS = sorted(p.stem for p in builtin_dir("sweeps").glob("*.yaml"))
SWEEPER = "hydra_plugins.hyrax_optuna_sweeper.optuna_sweeper.OptunaSweeper"
PNG = b"\x89PNG\r\n\x1a\n"


def _compose(*overrides: str):
    register_configs()
    register_sweeper_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(builtin_dir("conf")), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_the_presets_are_shipped() -> None:
    assert {"demo", "grid", "hyperband", "lr_search", "random"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_into_a_valid_sweep(name: str) -> None:
    cfg = _compose(f"sweep={name}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == SWEEPER
    assert sweeper.direction == cfg.train.objective.direction
    assert sweeper.n_trials > 0 and sweeper.study_name == name
    # Every searched key exists in the job config (a typo would fail every trial).
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    space = parse_search_space(OmegaConf.to_container(sweeper.params))
    assert set(space.distributions) == set(sweeper.params)
    check_sweep(sweeper, list(cfg.hydra.overrides.task))  # the checks every sweep passes first
    grid = space.grid_search_space() if builders.is_grid_sampler(sweeper.sampler) else None
    assert type(builders.build_sampler(sweeper.sampler, grid=grid)).__name__ == _class_name(sweeper.sampler)
    pruner = builders.build_pruner(sweeper.pruner)
    assert type(pruner).__name__ == (_class_name(sweeper.pruner) if sweeper.pruner else "NopPruner")


def _class_name(config) -> str:
    return str(config._target_).rsplit(".", 1)[-1]


def test_direction_and_pruner_budget_follow_the_train_config() -> None:
    cfg = _compose("sweep=hyperband", "train.objective.direction=maximize", "train.epochs=27")
    assert cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.sweeper.pruner.max_resource == 27


def test_a_user_preset_in_the_working_directory(tmp_path, monkeypatch) -> None:
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
        "hydra:\n  sweeper:\n    n_trials: 3\n    params:\n      optimizer.lr: choice(0.1, 0.01)\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = _compose("sweep=mine")
    assert cfg.hydra.sweeper._target_ == SWEEPER and cfg.hydra.sweeper.n_trials == 3


@pytest.mark.slow
def test_demo_runs_and_writes_results_and_plots(hyrax_run, tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    ok(hyrax_run("-m", "sweep=demo", f"hydra.sweep.dir={sweep_dir}"))
    results = OmegaConf.to_container(OmegaConf.load(sweep_dir / RESULTS_FILE))
    assert set(results["best_params"]) == {"optimizer.lr", "model.hidden"}
    assert isinstance(results["best_value"], float)
    study = open_study(sweep_dir / JOURNAL_FILE, "demo")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert results["best_value"] == study.best_value
    for name in ("optimization_history", "param_importances", "slice", "intermediate_values"):
        assert (sweep_dir / "plots" / f"{name}.png").read_bytes().startswith(PNG), name


@pytest.mark.slow
def test_hyperband_prunes_a_bad_curve_early(hyrax_run, tmp_path) -> None:
    """lr 1e-6 keeps val/loss near log(4); after a good lr 1e-2 trial in the same bracket, it is pruned."""
    sweep_dir, epochs = tmp_path / "sweep", 6
    fixed = "optimizer.weight_decay:1e-5,train.batch_size:64"  # the same curve each time: no sampling
    good, bad = f"{{optimizer.lr:0.01,{fixed}}}", f"{{optimizer.lr:1e-6,{fixed}}}"
    ok(
        hyrax_run(
            "-m",
            "sweep=hyperband",
            f"hydra.sweep.dir={sweep_dir}",
            f"train.epochs={epochs}",
            "hydra.sweeper.n_trials=4",
            "optimizer.lr=choice(0.01,1e-6)",
            f"hydra.sweeper.enqueue_trials=[{good},{good},{bad},{bad}]",
        )
    )
    trials = open_study(sweep_dir / JOURNAL_FILE, "hyperband").trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.state, t.params, t.intermediate_values) for t in trials]
    for t in pruned:
        assert t.params["optimizer.lr"] == 1e-6 and len(t.intermediate_values) < epochs
    assert all(len(t.intermediate_values) == epochs for t in trials if t.state == TrialState.COMPLETE)
    assert (sweep_dir / "plots" / "intermediate_values.png").is_file()


def test_plots_never_fail_and_multi_objective_gets_a_pareto_front(tmp_path, caplog) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    multi.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 - t.suggest_float("y", 0, 1)), n_trials=5)
    assert [p.name for p in write_plots(multi, tmp_path / "multi")] == ["pareto_front.png"]
    assert write_plots(optuna.create_study(), tmp_path / "empty") == []
    (tmp_path / "a_file").write_text("")
    with caplog.at_level(logging.WARNING):
        assert write_plots(multi, tmp_path / "a_file" / "plots") == []
    assert "Could not" in caplog.text
