"""End-to-end sweeps: real subprocess multiruns of app/quadratic.py, real Optuna storage."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from studies import open_study

from hyrax.search.asking import RETRY_ATTR, is_counted
from hyrax.search.ownership import OWNER_ATTR, Ownership
from hyrax.search.storage import open_storage

pytestmark = pytest.mark.slow  # every test here runs the app's sweep in a subprocess

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SPACE = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}  # app/conf/quadratic.yaml


def test_tpe_finds_the_optimum(app) -> None:
    app.run("hydra.sweeper.n_trials=30")
    results = app.results()
    assert results["name"] == "optuna" and results["study_name"] == "quadratic"
    assert results["best_value"] < 0.5
    assert abs(results["best_params"]["x"] - 2) < 0.7 and abs(results["best_params"]["y"] + 1) < 0.7
    study = open_study(app.journal)
    assert len(study.trials) == 30 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.best_value == results["best_value"]


def test_documented_example_config_runs_unchanged(app) -> None:
    """conf/sphere.yaml is the example config of the hydra-optuna-sweeper docs, verbatim."""
    app.run(config="sphere")
    study = open_study(app.journal, "sphere")
    # TPE proposes points it already tried in this 23 x 3 grid; those asks are refused, not run.
    ran = [t for t in study.trials if is_counted(t)]
    assert len(ran) == 20 and all(t.state == TrialState.COMPLETE for t in ran)
    assert len({(t.params["x"], t.params["y"]) for t in ran}) == 20
    for t in ran:
        assert -5.5 <= t.params["x"] <= 5.5 and (t.params["x"] * 2).is_integer()
        assert t.params["y"] in (-5, 0, 5)
        assert t.value == t.params["x"] ** 2 + t.params["y"] ** 2
    assert app.results()["best_value"] == study.best_value


def test_resume_after_sigkill_finishes_exactly_n_trials(app) -> None:
    args = ("hydra.sweeper.n_trials=8", "sleep=0.3")
    proc = app.popen(*args)
    try:
        _wait_for_complete(app, 3, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = open_study(app.journal).trials
    assert len([t for t in killed if t.state.is_finished()]) < 8

    app.run(*args)
    trials = open_study(app.journal).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state in FINISHED for t in trials)
    # The dead sweep's orphans are told FAIL but not counted: 8 trials ran to their end.
    assert [t.state for t in trials if is_counted(t)] == [TrialState.COMPLETE] * 8
    for orphan in (t for t in killed if t.state == TrialState.RUNNING):
        assert trials[orphan.number].state == TrialState.FAIL and not is_counted(trials[orphan.number])
        retry = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == orphan.number]
        # Killed while its trial was being asked, an orphan may hold only some of its parameters:
        # the retry keeps those and samples the rest.
        assert len(retry) == 1 and orphan.params.items() <= retry[0].params.items()


def _wait_for_complete(app, count: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        if app.journal.exists():
            done = open_study(app.journal).get_trials(states=(TrialState.COMPLETE,))
            if len(done) >= count:
                return
        time.sleep(0.1)
    raise AssertionError("the sweep did not make progress")


def test_failed_trials_are_told_fail_and_enqueued_trials_run_first(app) -> None:
    enqueued = "[{x:0.5,y:0.0},{x:4.5,y:0.0},{x:-4.5,y:1.0}]"
    app.run(
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.max_failure_rate=0.4",
        "crash_above=4",
        "nan_below=-4",
        f"hydra.sweeper.enqueue_trials={enqueued}",
        "x=interval(-3,3)",
    )
    trials = open_study(app.journal).trials
    assert [t.params["x"] for t in trials[:3]] == [0.5, 4.5, -4.5]
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]


def test_exceeding_max_failure_rate_stops_the_sweep(app) -> None:
    proc = app.run(
        "hydra.sweeper.n_trials=10", "hydra.sweeper.max_failure_rate=0.2", "crash_above=-10", check=False
    )
    assert proc.returncode == 1  # the trials crashed: not bad input
    assert "FailureRateExceeded: 3 of 3 trials failed in this sweep" in proc.stderr
    assert "max_failure_rate=0.2 of n_trials=10" in proc.stderr
    assert "First error (trial 0): RuntimeError: crash for x=" in proc.stderr
    assert Counter(t.state for t in open_study(app.journal).trials) == {TrialState.FAIL: 3}


def _grid_run(app, seed: int) -> list[tuple[int, int]]:
    """Run the grid sampler with `seed` over x in {0, 1, 2} and y in {0, 1}; the points in trial order."""
    app.run(
        "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.sampler.seed={seed}",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=4",
        "x=choice(0,1,2)",
        "y=range(0,2)",
    )
    trials = open_study(app.journal).trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    return [(t.params["x"], t.params["y"]) for t in trials]


def test_grid_evaluates_each_point_once_in_the_order_its_seed_gives(make_app) -> None:
    first = _grid_run(make_app("seed1"), seed=1)
    # Each point of the grid exactly once, nothing else; the sweep stops there although n_trials=20.
    assert sorted(first) == [(x, y) for x in range(3) for y in range(2)]
    assert _grid_run(make_app("seed1_again"), seed=1) == first
    other = _grid_run(make_app("seed2"), seed=2)
    assert sorted(other) == sorted(first) and other != first


def test_a_restarted_worker_fails_its_orphans_and_leaves_other_workers_trials_alone(app) -> None:
    study = optuna.create_study(study_name="quadratic", storage=open_storage(str(app.journal)))
    orphan = study.ask(SPACE)  # a dead run of this sweep asked it, and was killed before claiming it
    running_elsewhere = study.ask(SPACE)
    Ownership(app.workdir / "worker_b").claim(running_elsewhere)
    app.run("hydra.sweeper.n_trials=4")

    trials = open_study(app.journal).trials
    # The orphan is told FAIL and not counted; the trial running elsewhere counts: 3 more to run.
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING] + [TrialState.COMPLETE] * 3
    assert not is_counted(trials[0]) and is_counted(trials[1])
    assert trials[1].user_attrs[OWNER_ATTR] == str(app.workdir / "worker_b")  # not ours: left running
    assert trials[2].user_attrs[RETRY_ATTR] == 0 and trials[2].params == orphan.params
    assert {t.user_attrs[OWNER_ATTR] for t in trials[2:]} == {str(app.sweep_dir)}


def test_multi_objective(app) -> None:
    app.run(
        "objective=multi",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.sampler.population_size=4",
        "hydra.sweeper.n_trials=8",
    )
    study = open_study(app.journal)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in study.trials)
    solutions = app.results()["solutions"]
    assert {s["number"] for s in solutions} == {t.number for t in study.best_trials}


def test_custom_search_space_and_rdb_storage(app) -> None:
    db = app.workdir / "study.db"
    app.run(
        "objective=custom",
        "hydra.sweeper.custom_search_space=__main__.configure",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=custom",
        "hydra.sweeper.n_trials=5",
    )
    study = open_study(f"sqlite:///{db}", "custom")
    assert len(study.trials) == 5
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and abs(t.params["z"] - t.params["x"]) <= 0.5
        assert t.value == (t.params["x"] - 1) ** 2 + (t.params["z"] - t.params["x"]) ** 2


def test_submitit_runs_trials_in_parallel_and_prunes_across_processes(app) -> None:
    """n_jobs=2 on submitit_local: trials 0/1 overlap in time in separate processes; the bad
    curves of trials 2/3 (x=5, x=4) are pruned by the job processes' median pruner."""
    log_file = app.workdir / "events.jsonl"
    app.run(
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "objective=curve",
        "epochs=4",
        "sleep=0.2",
        f"log_file={log_file}",
        "hydra.sweeper.enqueue_trials=[{x:0.0},{x:0.1},{x:5.0},{x:4.0}]",
    )
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    spans = {n: [e["time"] for e in events if e["number"] == n] for n in range(4)}
    pids = {e["number"]: e["pid"] for e in events}
    assert max(spans[0][0], spans[1][0]) < min(spans[0][-1], spans[1][-1]), "trials 0 and 1 did not overlap"
    assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()

    trials = open_study(app.journal).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    for t in trials[2:]:
        assert t.last_step is not None and t.last_step < 3
        assert t.value == t.intermediate_values[t.last_step]
    assert [len(t.intermediate_values) for t in trials[:2]] == [4, 4]
