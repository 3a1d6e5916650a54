"""In-process unit tests: plugin registration, sampler/pruner building, job-side trials, outcomes,
and the sweep loop's steps on real Optuna studies."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hyrax.errors import HyraxError
from hyrax.search.asking import RETRY_ATTR, Asker, is_counted, tell
from hyrax.search.builders import build_pruner, build_sampler
from hyrax.search.config import register_configs
from hyrax.search.outcomes import job_outcome
from hyrax.search.ownership import OWNER_ATTR, Ownership
from hyrax.search.space import SearchSpace
from hyrax.search.storage import open_storage
from hyrax.search.sweeper import FailureRateExceeded, OptunaSweep
from hyrax.search.trial import (
    NUMBER_ENV,
    STUDY_ENV,
    current_trial_number,
    job_environment,
    open_trial,
    write_study_file,
)

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"x": optuna.distributions.FloatDistribution(0, 1)}


def _stored(group: str, name: str) -> dict:
    register_configs()
    node = ConfigStore.instance().load(f"{group}/{name}.yaml").node
    return OmegaConf.to_container(node)


def test_plugin_modules_do_not_import_optuna() -> None:
    code = (
        "import sys, hydra_plugins.hyrax_optuna_sweeper.optuna_sweeper, hyrax.search, hyrax.search.trial,"
        " hyrax.search.checks;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'optuna'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tpe", "TPESampler"),
        ("random", "RandomSampler"),
        ("nsgaii", "NSGAIISampler"),
        ("qmc", "QMCSampler"),
        ("gp", "GPSampler"),
    ],
)
def test_registered_sampler_configs_build(name: str, cls: str) -> None:
    config = _stored("hydra/sweeper/sampler", name)
    config["seed"] = 7
    sampler = build_sampler(config)
    assert type(sampler).__name__ == cls


@pytest.mark.parametrize("name", ["tpe", "random", "nsgaii", "qmc"])
def test_the_seed_reaches_the_sampler(name: str) -> None:
    def proposals(seed: int) -> list[float]:
        config = {**_stored("hydra/sweeper/sampler", name), "seed": seed}
        study = optuna.create_study(sampler=build_sampler(config))
        return [study.ask(SPACE).params["x"] for _ in range(3)]

    assert proposals(7) == proposals(7)
    assert proposals(7) != proposals(8)


def _grid_order(seed: int) -> list[tuple[int, str]]:
    """The order in which a grid sampler built from the `grid` config visits a 3 x 3 grid."""
    config = {**_stored("hydra/sweeper/sampler", "grid"), "seed": seed}
    grid = {"n": [1, 2, 3], "c": ["a", "b", "c"]}
    study = optuna.create_study(sampler=build_sampler(config, grid=grid))
    order: list[tuple[int, str]] = []

    def objective(trial: optuna.Trial) -> float:
        order.append((trial.suggest_int("n", 1, 3), trial.suggest_categorical("c", grid["c"])))
        return 0.0

    study.optimize(objective, n_trials=20)  # the grid sampler stops the study when the grid is done
    return order


def test_grid_sampler_gets_its_grid_and_keeps_its_seed() -> None:
    order = _grid_order(seed=3)
    assert sorted(order) == [(n, c) for n in (1, 2, 3) for c in "abc"]  # each point once, no other
    assert _grid_order(seed=4) != order


@pytest.mark.slow  # GPSampler imports torch
def test_gp_sampler_runs_ask_and_tell() -> None:
    study = optuna.create_study(
        sampler=build_sampler({"_target_": "optuna.samplers.GPSampler", "seed": 0, "n_startup_trials": 1})
    )
    dist = {"x": optuna.distributions.FloatDistribution(-2, 2)}
    for _ in range(3):
        trial = study.ask(dist)
        study.tell(trial, (trial.params["x"] - 1) ** 2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(-2 <= t.params["x"] <= 2 and t.value == (t.params["x"] - 1) ** 2 for t in study.trials)
    assert len({t.params["x"] for t in study.trials}) == 3


@pytest.mark.skipif(importlib.util.find_spec("cmaes") is not None, reason="cmaes is installed")
def test_sampler_with_missing_package_fails_clearly() -> None:
    with pytest.raises(HyraxError, match=r"needs the package\(s\) cmaes") as info:
        build_sampler(_stored("hydra/sweeper/sampler", "cmaes"))
    assert info.value.key == "hydra.sweeper.sampler" and "pip install cmaes" in info.value.fix


def test_unknown_sampler_target_fails_clearly() -> None:
    with pytest.raises(HyraxError, match="cannot import the sampler 'optuna.samplers.NoSuchSampler'") as info:
        build_sampler({"_target_": "optuna.samplers.NoSuchSampler"})
    assert info.value.key == "hydra.sweeper.sampler._target_"
    assert "optuna.samplers has no NoSuchSampler" in info.value.message


@pytest.mark.parametrize(
    "name, cls",
    [
        ("median", "MedianPruner"),
        ("hyperband", "HyperbandPruner"),
        ("successive_halving", "SuccessiveHalvingPruner"),
        ("nop", "NopPruner"),
    ],
)
def test_registered_pruner_configs_build(name: str, cls: str) -> None:
    assert type(build_pruner(_stored("hydra/sweeper/pruner", name))).__name__ == cls


def test_null_pruner_never_prunes() -> None:
    assert isinstance(build_pruner(None), optuna.pruners.NopPruner)
    assert isinstance(build_pruner({}), optuna.pruners.NopPruner)


def test_open_trial_outside_a_sweep_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NUMBER_ENV, raising=False)
    monkeypatch.delenv(STUDY_ENV, raising=False)
    assert open_trial() is None and current_trial_number() is None
    monkeypatch.setenv(NUMBER_ENV, "3")  # a number without its study file is no trial
    assert open_trial() is None


def test_open_trial_reports_and_prunes_through_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = str(tmp_path / "optuna.journal")
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = optuna.create_study(study_name="s", storage=open_storage(spec))
    for _ in range(2):  # trial ids differ from numbers in a shared storage
        optuna.create_study(study_name=f"other{_}", storage=open_storage(spec)).ask()
    done = study.ask()
    for step in range(3):
        done.report(1.0, step)
    study.tell(done, 1.0)
    good, bad = study.ask(), study.ask()

    study_file = write_study_file(tmp_path, "s", spec, pruner)

    def reporter_of(trial):
        with monkeypatch.context() as env:
            for name, value in job_environment(study_file, trial.number).items():
                env.setenv(name, value)
            return open_trial()

    good_reporter, bad_reporter = reporter_of(good), reporter_of(bad)
    assert good_reporter.number == good.number == 1 and bad_reporter.number == 2
    good_reporter.report(0.5, step=0)  # better than the median: goes on
    with pytest.raises(optuna.TrialPruned):
        bad_reporter.report(10.0, step=0)
    assert [t.intermediate_values for t in study.trials[1:]] == [{0: 0.5}, {0: 10.0}]


def _sweep(**kwargs) -> OptunaSweep:
    return OptunaSweep(sampler={"_target_": "optuna.samplers.RandomSampler"}, **kwargs)


@pytest.mark.parametrize(
    "status, value, state",
    [
        (JobStatus.COMPLETED, 1.5, TrialState.COMPLETE),
        (JobStatus.COMPLETED, None, TrialState.FAIL),
        (JobStatus.COMPLETED, math.nan, TrialState.FAIL),
        (JobStatus.COMPLETED, "abc", TrialState.FAIL),
        (JobStatus.FAILED, optuna.TrialPruned("pruned"), TrialState.PRUNED),
        (JobStatus.FAILED, RuntimeError("boom"), TrialState.FAIL),
        (JobStatus.UNKNOWN, None, TrialState.FAIL),
    ],
)
def test_job_outcomes_never_reraise(status: JobStatus, value: object, state: TrialState) -> None:
    got, values, error = job_outcome(JobReturn(status=status, _return_value=value))
    assert got == state
    assert (values == [1.5]) if state == TrialState.COMPLETE else (values is None)
    assert (error is None) == (state != TrialState.FAIL)


def test_multi_objective_outcomes() -> None:
    assert job_outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=(1, 2.5)), 2)[1] == [1.0, 2.5]
    state, _, error = job_outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=[1.0]), 2)
    assert state == TrialState.FAIL and "expected a list of 2 floats" in error


def test_failure_rate_counts_against_n_trials() -> None:
    sweep = _sweep(n_trials=10, max_failure_rate=0.2)
    sweep.launched = 4
    sweep.failures = [
        (1, "RuntimeError: boom", RuntimeError("boom")),
        (3, "the job returned NaN (nan)", None),
    ]
    assert sweep.failure_rate_reason() is None  # 2 of 10 allowed
    sweep.failures.append((4, "RuntimeError: again", RuntimeError("again")))
    assert sweep.failure_rate_reason() == "3 trials failed (max_failure_rate=0.2)"
    assert isinstance(sweep.failure, FailureRateExceeded)
    assert re.search(r"3 of 4 trials failed.*\(trial 1\): RuntimeError: boom", str(sweep.failure))
    assert str(sweep.failure.__cause__) == "boom"  # the first error's traceback comes along


def _shared_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(
        study_name="shared", storage=open_storage(str(tmp_path / "s.journal")), load_if_exists=True
    )


def test_resume_fails_and_requeues_only_this_sweeps_dead_trials(tmp_path: Path) -> None:
    orphan = _shared_study(tmp_path).ask(SPACE)  # its sweep was killed before it could claim it
    mine, theirs = Ownership(tmp_path / "worker_a"), Ownership(tmp_path / "worker_b")
    left = _shared_study(tmp_path).ask(SPACE)  # a dead run of worker_a claimed this one
    mine.claim(left)
    busy = _shared_study(tmp_path).ask(SPACE)  # worker_b is running this one
    theirs.claim(busy)
    just_asked = _shared_study(tmp_path).ask(SPACE)  # worker_b asked it a moment ago, claims it next
    study = _shared_study(tmp_path)
    started = study.trials[just_asked.number].datetime_start - timedelta(microseconds=1)
    sweep = _sweep()
    sweep.claim_wait_s = 0.0  # the unclaimed trials here stay unclaimed: no sweep is alive to claim them
    sweep.resume(study, Ownership(tmp_path / "worker_a", started=started))

    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "FAIL", "RUNNING", "RUNNING", "WAITING", "WAITING"]  # two retries queued
    assert [is_counted(t) for t in study.get_trials()[:2]] == [False, False]  # not towards n_trials
    retries = [study.ask(SPACE) for _ in range(2)]
    assert [r.params for r in retries] == [orphan.params, left.params]
    assert [_shared_study(tmp_path).trials[r.number].user_attrs[RETRY_ATTR] for r in retries] == [0, 1]
    assert study.tell(busy.number, 1.0).state == TrialState.COMPLETE  # worker_b still can
    assert study.tell(just_asked.number, 2.0).state == TrialState.COMPLETE


def test_trials_running_elsewhere_count_towards_n_trials(tmp_path: Path) -> None:
    study = _shared_study(tmp_path)
    Ownership(tmp_path / "worker_b").claim(study.ask())
    study.tell(study.ask(), 1.0)
    sweep = _sweep(n_trials=4, n_jobs=4)
    worker_a = Ownership(tmp_path / "worker_a")
    assert sweep.room(study, worker_a, running_here=0) == 2  # 4 - 1 finished - 1 running in worker_b
    trial = Asker(SearchSpace(dict(SPACE)), worker_a, n_trials=4).ask(study)
    assert study.trials[trial.number].user_attrs[OWNER_ATTR] == worker_a.owner
    assert sweep.room(study, worker_a, running_here=1) == 1  # its own running trial is not one elsewhere


def test_a_result_for_a_trial_finished_elsewhere_does_not_stop_the_sweep(tmp_path: Path) -> None:
    study = _shared_study(tmp_path)
    trial = study.ask()
    study.tell(trial.number, state=TrialState.FAIL)
    frozen = tell(study, trial.number, [1.0], TrialState.COMPLETE)
    assert frozen.state == TrialState.FAIL


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"direction": "down"}, "hydra.sweeper.direction"),
        ({"direction": ["minimize", "sideways"]}, "hydra.sweeper.direction"),
        ({"max_failure_rate": 1.5}, "hydra.sweeper.max_failure_rate"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs"),
        ({"n_trials": -1}, "hydra.sweeper.n_trials"),
        ({"custom_search_space": "no_such_module.configure"}, "hydra.sweeper.custom_search_space"),
    ],
)
def test_bad_settings_are_rejected(settings: dict, key: str) -> None:
    with pytest.raises(HyraxError) as info:
        _sweep(**settings)
    assert info.value.key == key and info.value.fix


def test_our_configs_win_over_a_released_plugin_scanned_later(tmp_path: Path) -> None:
    """A released hydra-optuna-sweeper storing hydra/sweeper=optuna must not shadow ours."""
    fake = tmp_path / "hydra_plugins" / "hydra_optuna_sweeper"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "config.py").write_text(
        "from hydra.core.config_store import ConfigStore\n"
        "ConfigStore.instance().store(group='hydra/sweeper', name='optuna', provider='optuna_sweeper',\n"
        "    node={'_target_': 'hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper'})\n"
    )
    app = ROOT / "tests" / "search" / "app" / "quadratic.py"
    out = subprocess.run(
        [sys.executable, str(app), "--cfg", "hydra", "-p", "hydra.sweeper._target_"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": f"{ROOT}{':'}{tmp_path}", "PATH": ""},  # the fake is scanned after ours
    )
    assert out.stdout.strip() == "hydra_plugins.hyrax_optuna_sweeper.optuna_sweeper.OptunaSweeper"
