"""Multiruns through the real `hyrax-run -m`: one MLflow parent per sweep, a child per job or trial."""

from __future__ import annotations

import optuna
import pytest
from hyraxtest import HYRAX_RUN, mlflow_runs, ok, parent_and_children, run_hyrax, started, wait_until
from mlflow.tracking import MlflowClient

from hyrax import tags
from hyrax.search.asking import is_counted

pytestmark = pytest.mark.slow  # every test here is a `hyrax-run -m` sweep end to end

OPTUNA = ["hydra/sweeper=optuna", "optimizer.lr=tag(log, interval(1e-4, 1e-1))"]


def test_grid_sweep_has_a_parent_with_the_best_child(hyrax_run):
    proc = ok(hyrax_run("-m", "optimizer.lr=0.0001,0.001,0.01", "model.hidden=8,16", "train.epochs=1"))
    [parent], children = parent_and_children(mlflow_runs(proc.cwd))
    assert len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    best = min(children, key=lambda c: c.data.metrics["objective"])
    assert parent.data.metrics["best_objective"] == best.data.metrics["objective"]
    assert parent.data.tags["hyrax.best_run_id"] == best.info.run_id
    assert parent.data.tags["hyrax.best_overrides"] == best.data.tags["hyrax.overrides"]
    assert len({c.data.tags["hyrax.overrides"] for c in children}) == 6


def test_failed_job_fails_the_parent(hyrax_run):
    proc = hyrax_run(
        "-m", "model=userpkg.models.CrashNet,mlp", "data_set=userpkg.data.ImageLabelData", "train.epochs=1"
    )
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr
    [parent], children = parent_and_children(mlflow_runs(proc.cwd))
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]


def test_parallel_optuna_trials_share_one_sqlite_store(hyrax_run):
    proc = ok(
        hyrax_run(
            "-m",
            *OPTUNA,
            "hydra/launcher=submitit_local",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=4",
            "train.epochs=4",
            "model=userpkg.models.PlainNet",
            "data_set=userpkg.data.ImageLabelData",
            "data_set.delay=0.003",
            timeout=400,
        )
    )
    [parent], children = parent_and_children(mlflow_runs(proc.cwd))
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert sorted(int(c.data.tags["hyrax.trial_number"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["hyrax.optuna_state"] for c in children} == {"COMPLETE"}
    assert all(c.info.status == "FINISHED" for c in children)
    first, second = sorted(children, key=lambda c: int(c.data.tags["hyrax.trial_number"]))[:2]
    assert first.info.start_time < second.info.end_time and second.info.start_time < first.info.end_time, (
        "the two trials of a batch did not run at the same time"
    )


def test_killed_optuna_sweep_resumes_with_one_child_per_trial(tmp_path):
    sweep_dir = tmp_path / "multiruns" / "study"
    args = [
        "-m",
        *OPTUNA,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=1",
        "model=userpkg.models.PlainNet",
        "data_set=userpkg.data.ImageLabelData",
        "data_set.delay=0.002",
        "train.epochs=3",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    journal, log = sweep_dir / "optuna.journal", tmp_path / "killed.log"
    with started([HYRAX_RUN, *args], tmp_path, log) as proc:
        wait_until(lambda: _completed(journal) >= 2, 240, "two COMPLETE trials in the journal", log, proc)
        proc.kill()
        proc.wait()
    assert len(_study(journal).get_trials()) < 6, "the sweep finished before it could be killed"

    ok(run_hyrax(args, tmp_path, timeout=400))
    trials = _study(journal).get_trials()
    # The killed sweep's orphan is told FAIL and not counted: 6 trials ran to their end.
    finished = [t for t in trials if t.state.is_finished() and is_counted(t)]
    assert len(finished) == 6 and len({t.number for t in trials}) == len(trials)
    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert parent.info.status == "FINISHED"
    assert sorted(int(c.data.tags["hyrax.trial_number"]) for c in children) == sorted(
        t.number for t in trials
    )
    assert all(c.info.status != "RUNNING" for c in children)


def _completed(journal) -> int:
    """How many trials of the study in `journal` are COMPLETE (0 before the journal exists)."""
    if not journal.exists():
        return 0
    return len(_study(journal).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def _study(journal) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    [summary] = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_misconfigured_sweep_is_bad_input_not_a_crash(hyrax_run):
    proc = hyrax_run("-m", "sweep=grid", "model=linear", "mlflow.enabled=false")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "1 of 1 trials failed" in proc.stderr and "Fix: 'model.hidden' is not a known key" in proc.stderr


def test_multi_objective_study_and_parent_artifacts(hyrax_run):
    proc = ok(
        hyrax_run(
            "-m",
            "hydra/sweeper=optuna",
            "hydra/sweeper/sampler=nsgaii",
            "hydra.sweeper.direction=[minimize,maximize]",
            "hydra.sweeper.n_trials=3",
            "train.objective.metric=[val/loss,val/accuracy]",
            "train.objective.direction=[minimize,maximize]",
            "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
            "train.epochs=1",
        )
    )
    [parent], children = parent_and_children(mlflow_runs(proc.cwd))
    assert len(children) == 3 and all("objective_1" in c.data.metrics for c in children)
    client = MlflowClient(f"sqlite:///{proc.cwd}/mlflow.db")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "optimization_results.yaml" in names and "plots" in names
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == ["plots/pareto_front.png"]


def test_the_parent_run_says_why_the_sweep_stopped_and_the_compute_it_used(hyrax_run):
    # The second trial (lr 1e-6) does not improve on the first: patience 1 ends the search there.
    proc = ok(
        hyrax_run(
            "-m",
            *OPTUNA,
            "hydra.sweeper.n_trials=20",
            "hydra.sweeper.stop_when.patience=1",
            "hydra.sweeper.enqueue_trials=[{optimizer.lr:0.01},{optimizer.lr:1e-6},{optimizer.lr:0.02}]",
            "train.epochs=1",
        )
    )
    [parent], children = parent_and_children(mlflow_runs(proc.cwd))
    assert len(children) == 2 and parent.info.status == "FINISHED"
    assert parent.data.tags[tags.STOPPED_BECAUSE] == "no improvement in 1 trials (stop_when.patience=1)"
    trial_seconds = parent.data.metrics[tags.TRIAL_SECONDS]
    runs = sum((c.info.end_time - c.info.start_time) / 1000 for c in children)
    assert runs <= trial_seconds <= parent.data.metrics[tags.WALL_SECONDS] + 1e-6, (runs, parent.data.metrics)


def test_an_optuna_sweep_whose_trials_all_fail_fails_with_the_first_error(hyrax_run):
    proc = hyrax_run(
        "-m",
        *OPTUNA,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=1.0",
        "model=userpkg.models.CrashNet",
        "data_set=userpkg.data.ImageLabelData",
        "train.epochs=1",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        "all 2 trials of this sweep failed; the first, trial 0, ended with ZeroDivisionError" in proc.stderr
    )
    [parent], children = parent_and_children(mlflow_runs(proc.cwd))
    assert parent.info.status == "FAILED" and parent.data.tags[tags.STOPPED_BECAUSE] == "all 2 trials failed"
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED"]
