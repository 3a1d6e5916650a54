"""Sweeps that never idle, end to end on the tiny app: asynchronous refill, budgets, a plain Hydra app's
own config left alone, and the official plugin's behaviours (warnings, removed samplers, failures)."""

from __future__ import annotations

import json
import signal
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState
from studies import open_study

from hyrax.errors import HyraxError
from hyrax.search.asking import is_counted
from hyrax.search.checks import check_sweep
from hyrax.search.sweeper import OptunaSweep

POOL = "hydra/launcher=hyrax_pool"  # the pool's schema, as any Hydra app (not hyrax-run) picks it


def _events(log_file: Path) -> list[dict]:
    return [json.loads(line) for line in log_file.read_text().splitlines()]


@pytest.mark.slow
def test_a_free_slot_is_refilled_before_the_slowest_trial_ends(app) -> None:
    # Trial 1 sleeps 4 s, the others 0.4 s: with a batch barrier trial 2 would wait for trial 1.
    log_file = app.workdir / "events.jsonl"
    app.run(
        POOL,
        "hydra.launcher.n_workers=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "sleep_per_x=1.0",
        "hydra.sweeper.enqueue_trials=[{x:0.4},{x:4.0},{x:0.4001},{x:0.4002}]",
        f"log_file={log_file}",
    )
    events = _events(log_file)
    start = {e["number"]: e["time"] for e in events if e["event"] == "start"}
    end = {e["number"]: e["time"] for e in events if e["event"] == "end"}
    assert start[2] < end[1] and start[3] < end[1], (start, end)
    assert [t.state for t in open_study(app.journal).trials] == [TrialState.COMPLETE] * 4
    results = app.results()
    # Two slots busy all along: the trials' time fills most of 2 x the wall time.
    assert results["trial_seconds"] > 1.5 * results["wall_seconds"], results


@pytest.mark.slow
def test_a_sweep_stops_when_the_objective_reaches_stop_when_value(app) -> None:
    app.run(
        "hydra.sweeper.n_trials=30",
        "hydra.sweeper.stop_when.value=2.0",
        "hydra.sweeper.enqueue_trials=[{x:4.0,y:4.0},{x:2.5,y:-1.5},{x:0.0,y:0.0}]",
    )
    states = [t.state for t in open_study(app.journal).trials]
    # The second trial's 0.5 reached the target: the third stays queued, never started.
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.WAITING]
    assert app.results()["stopped_because"] == "the objective reached 0.5 (stop_when.value=2.0)"


@pytest.mark.slow
def test_a_sweep_stops_after_patience_trials_without_improvement(app) -> None:
    app.run(
        "hydra.sweeper.n_trials=30",
        "hydra.sweeper.stop_when.patience=2",
        "hydra.sweeper.enqueue_trials=[{x:2.0,y:-1.0},{x:4.0,y:4.0},{x:3.0,y:3.0},{x:2.1,y:-1.0}]",
    )
    states = [t.state for t in open_study(app.journal).trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.WAITING]
    assert app.results()["stopped_because"] == "no improvement in 2 trials (stop_when.patience=2)"


@pytest.mark.slow
def test_no_trial_starts_after_the_timeout_and_running_ones_finish(app) -> None:
    log_file = app.workdir / "events.jsonl"
    app.run(
        "hydra.sweeper.n_trials=30",
        "hydra.sweeper.timeout=1.5",
        "sleep=0.6",
        f"log_file={log_file}",
        "hydra.sweeper.plots=false",
    )
    assert not (app.sweep_dir / "plots").exists()
    trials = open_study(app.journal).trials
    assert 2 <= len(trials) <= 4 and all(t.state == TrialState.COMPLETE for t in trials)
    results = app.results()
    assert (
        results["stopped_because"].startswith("timeout after ")
        and "(timeout=1.5 s)" in results["stopped_because"]
    )
    assert results["trials_run"] == len(trials) and results["trial_seconds"] >= 0.6 * len(trials)


@pytest.mark.slow
def test_a_plain_apps_own_trial_key_and_override_dirname_are_left_alone(app) -> None:
    log_file = app.workdir / "events.jsonl"
    app.run(
        "hydra.sweeper.n_trials=3",
        "hydra.sweep.subdir=${hydra.job.override_dirname}",
        "hydra.job.config.override_dirname.exclude_keys=[log_file]",
        f"log_file={log_file}",
        config="own_trial",
    )
    events = [e for e in _events(log_file) if e["event"] == "start"]
    assert [e["trial"] for e in events] == [{"name": "baseline", "repeats": 2}] * 3  # nothing added
    assert sorted(e["number"] for e in events) == [0, 1, 2]  # yet each job knew its trial
    subdirs = sorted(p.name for p in app.sweep_dir.iterdir() if p.is_dir() and p.name.startswith("x="))
    assert len(subdirs) == 3, sorted(p.name for p in app.sweep_dir.iterdir())  # flat: no storage path in them
    for subdir in subdirs:
        assert "trial" not in subdir and "journal" not in subdir
        overrides = OmegaConf.load(app.sweep_dir / subdir / ".hydra" / "overrides.yaml")
        assert sorted(o.split("=")[0] for o in overrides) == ["log_file", "x", "y"]


@pytest.mark.slow
def test_a_sweep_whose_trials_all_failed_fails_with_the_first_error(app) -> None:
    proc = app.run(
        "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=1.0", "crash_above=-10", check=False
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    # Named on stderr; each failure's traceback is in the log (stdout), as the official plugin does.
    first = "all 3 trials of this sweep failed; the first, trial 0, ended with RuntimeError('crash for x="
    assert first in proc.stderr and "Traceback" in proc.stdout
    assert Counter(t.state for t in open_study(app.journal).trials) == {TrialState.FAIL: 3}
    assert app.results()["stopped_because"] == "all 3 trials failed"


@pytest.mark.slow
def test_motpe_says_optuna_removed_it_and_what_to_use(app) -> None:
    proc = app.run("hydra/sweeper/sampler=motpe", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Error in hydra.sweeper.sampler" in proc.stderr
    assert "the 'motpe' sampler was removed in Optuna 4.0" in proc.stderr
    assert "hydra/sweeper/sampler=tpe" in proc.stderr
    assert "Traceback" not in proc.stderr and not app.sweep_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, key",
    [
        ("hydra.sweeper.timeout=-5", "hydra.sweeper.timeout"),
        ("hydra.sweeper.stop_when.patience=0", "hydra.sweeper.stop_when.patience"),
    ],
)
def test_a_bad_budget_is_one_message_before_anything_is_created(app, override: str, key: str) -> None:
    proc = app.run(override, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"Error in {key}" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and not app.sweep_dir.exists()


def test_the_deprecated_search_space_warns_as_the_official_plugin_does() -> None:
    sweep = OptunaSweep(
        sampler={"_target_": "optuna.samplers.RandomSampler"},
        search_space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
    )
    with pytest.warns(UserWarning, match=r"search_space` is deprecated.*hydra.sweeper.params"):
        space = sweep.parse_space([])
    assert list(space.distributions) == ["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OptunaSweep(
            sampler={"_target_": "optuna.samplers.RandomSampler"}, params={"x": "interval(0, 1)"}
        ).parse_space([])


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"timeout": -5}, "hydra.sweeper.timeout"),
        ({"stop_when": {"patience": 0}}, "hydra.sweeper.stop_when.patience"),
        (
            {"stop_when": {"value": 0.1}, "direction": ["minimize", "maximize"]},
            "hydra.sweeper.stop_when.value",
        ),
    ],
)
def test_bad_budgets_name_their_key(settings: dict, key: str) -> None:
    config = {
        "_target_": "hydra_plugins.hyrax_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "sampler": {"_target_": "optuna.samplers.RandomSampler"},
        "params": {"x": "interval(0, 1)"},
        **settings,
    }
    with pytest.raises(HyraxError) as info:
        check_sweep(config, [])
    assert info.value.key == key and info.value.fix


def _kill_while_a_trial_runs(app, args: tuple[str, ...], complete: int) -> None:
    """Start the sweep; SIGKILL it once `complete` trials are COMPLETE and another one is RUNNING."""
    proc = app.popen(*args)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            states = [t.state for t in open_study(app.journal).trials] if app.journal.exists() else []
            if states.count(TrialState.COMPLETE) >= complete and TrialState.RUNNING in states:
                return
            time.sleep(0.05)
        raise AssertionError("the sweep ended or stalled before it could be killed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_a_resumed_sweep_does_not_count_the_dead_sweeps_orphan(app) -> None:
    # A sweep killed with a trial running: the resumed one must still end with n_trials results.
    args = ("hydra.sweeper.n_trials=5", "sleep=0.4")
    _kill_while_a_trial_runs(app, args, complete=2)
    app.run(*args)
    trials = open_study(app.journal).trials
    orphans = [t for t in trials if not is_counted(t)]
    assert len(orphans) == 1 and orphans[0].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5, [
        (t.number, t.state.name) for t in trials
    ]
