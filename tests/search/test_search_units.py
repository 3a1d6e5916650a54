"""In-process unit tests: plugin registration, sampler/pruner building, job-side trials, outcomes."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hyrax.search.builders import build_pruner, build_sampler
from hyrax.search.config import register_configs
from hyrax.search.storage import open_storage
from hyrax.search.sweeper import FailureRateExceeded, OptunaSweep
from hyrax.search.trial import open_trial

ROOT = Path(__file__).resolve().parents[2]


def _stored(group: str, name: str) -> dict:
    register_configs()
    node = ConfigStore.instance().load(f"{group}/{name}.yaml").node
    return OmegaConf.to_container(node)


def test_plugin_modules_do_not_import_optuna() -> None:
    code = (
        "import sys, hydra_plugins.hyrax_optuna_sweeper.optuna_sweeper, hyrax.search, hyrax.search.trial;"
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


def test_grid_sampler_gets_its_grid_and_keeps_its_seed() -> None:
    config = _stored("hydra/sweeper/sampler", "grid")
    sampler = build_sampler(config, grid={"x": [1, 2]}, seed_offset=5)
    assert isinstance(sampler, optuna.samplers.GridSampler)


def test_gp_sampler_runs_ask_and_tell() -> None:
    study = optuna.create_study(
        sampler=build_sampler({"_target_": "optuna.samplers.GPSampler", "seed": 0, "n_startup_trials": 1})
    )
    dist = {"x": optuna.distributions.FloatDistribution(-2, 2)}
    for _ in range(3):
        trial = study.ask(dist)
        study.tell(trial, (trial.params["x"] - 1) ** 2)
    assert len(study.trials) == 3


@pytest.mark.skipif(importlib.util.find_spec("cmaes") is not None, reason="cmaes is installed")
def test_sampler_with_missing_package_fails_clearly() -> None:
    with pytest.raises(ImportError, match=r"needs the package\(s\) cmaes.*pip install cmaes"):
        build_sampler(_stored("hydra/sweeper/sampler", "cmaes"))


def test_unknown_sampler_target_fails_clearly() -> None:
    with pytest.raises(ImportError, match="Cannot import the sampler 'optuna_integration.NoSuchSampler'"):
        build_sampler({"_target_": "optuna_integration.NoSuchSampler"})


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


def test_open_trial_outside_a_sweep_is_none() -> None:
    assert open_trial(None) is None
    assert open_trial({"study_name": None, "storage": None, "number": None, "pruner": None}) is None


def test_open_trial_reports_and_prunes_through_the_storage(tmp_path: Path) -> None:
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

    def reporter_of(trial):
        cfg = OmegaConf.create({"study_name": "s", "storage": spec, "number": trial.number, "pruner": pruner})
        return open_trial(cfg)

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
    got, values, error = _sweep().outcome(JobReturn(status=status, _return_value=value))
    assert got == state
    assert (values == [1.5]) if state == TrialState.COMPLETE else (values is None)
    assert (error is None) == (state != TrialState.FAIL)


def test_multi_objective_outcomes() -> None:
    sweep = _sweep(direction=["minimize", "maximize"])
    assert sweep.outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=(1, 2.5)))[1] == [1.0, 2.5]
    state, _, error = sweep.outcome(JobReturn(status=JobStatus.COMPLETED, _return_value=[1.0]))
    assert state == TrialState.FAIL and "expected a list of 2 floats" in error


def test_failure_rate_counts_against_n_trials() -> None:
    sweep = _sweep(n_trials=10, max_failure_rate=0.2)
    sweep.launched = 4
    sweep.failures = [
        (1, "RuntimeError: boom", RuntimeError("boom")),
        (3, "the job returned NaN (nan)", None),
    ]
    sweep.check_failure_rate()  # 2 of 10 allowed
    sweep.failures.append((4, "x"))
    with pytest.raises(FailureRateExceeded, match=r"3 of 4 trials failed.*\(trial 1\): RuntimeError: boom"):
        sweep.check_failure_rate()


def _shared_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(
        study_name="shared", storage=open_storage(str(tmp_path / "s.journal")), load_if_exists=True
    )


def test_a_trial_just_asked_by_another_sweep_is_left_alone(tmp_path: Path) -> None:
    # The race seen with two workers: worker B asks a trial and has not yet recorded itself on it
    # when worker A looks. A must neither fail it nor count it as its own.
    sweep = _sweep(n_trials=3, n_jobs=3)
    sweep.owner = str(tmp_path / "worker_a")
    other = _shared_study(tmp_path).ask()  # asked after A started; no owner recorded yet
    study = _shared_study(tmp_path)
    sweep.resume(study)
    [trial] = study.get_trials()
    assert trial.state == TrialState.RUNNING and sweep.owner_of(trial) == ""
    assert sweep.next_batch_size(study) == 2  # B's trial is on its way to finishing
    assert study.tell(other.number, 1.0).state == TrialState.COMPLETE  # and B finishes it


def _orphan_is_failed_and_queued_again(tmp_path: Path, sweep: OptunaSweep, orphan: optuna.Trial) -> None:
    sweep.owner = str(tmp_path / "worker_a")
    study = _shared_study(tmp_path)
    sweep.resume(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]
    assert study.ask(SPACE).params == orphan.params


SPACE = {"x": optuna.distributions.FloatDistribution(0, 1)}


def test_an_ownerless_trial_from_before_the_sweep_started_is_cleaned_up(tmp_path: Path) -> None:
    # A sweep SIGKILLed between asking a trial and recording itself, then re-run at once.
    orphan = _shared_study(tmp_path).ask(SPACE)
    _orphan_is_failed_and_queued_again(tmp_path, _sweep(n_trials=2), orphan)


def test_an_ownerless_trial_past_the_grace_period_is_cleaned_up(tmp_path: Path, monkeypatch) -> None:
    # Another worker was killed in that moment while this sweep was already running.
    monkeypatch.setattr("hyrax.search.sweeper.OWNER_GRACE_S", 0.0)
    sweep = _sweep(n_trials=2)
    orphan = _shared_study(tmp_path).ask(SPACE)
    _orphan_is_failed_and_queued_again(tmp_path, sweep, orphan)


def test_a_result_for_a_trial_finished_elsewhere_does_not_stop_the_sweep(tmp_path: Path) -> None:
    study = _shared_study(tmp_path)
    trial = study.ask()
    study.tell(trial.number, state=TrialState.FAIL)
    frozen = _sweep()._tell(study, trial.number, [1.0], TrialState.COMPLETE)
    assert frozen.state == TrialState.FAIL


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="direction"):
        _sweep(direction="down")
    with pytest.raises(ValueError, match="max_failure_rate"):
        _sweep(max_failure_rate=1.5)


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
