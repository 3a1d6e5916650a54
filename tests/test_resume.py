"""Resuming: a killed run continues from its last checkpoint, in the same MLflow run."""

from __future__ import annotations

import pytest
import torch
from hyraxtest import HYRAX_RUN, metric_history, mlflow_runs, ok, run_dirs, started, wait_until

pytestmark = pytest.mark.slow  # every test here runs hyrax-run end to end, some of them twice

SLOW = [
    "model=userpkg.models.PlainNet",
    "data_set=userpkg.data.ImageLabelData",
    "data_set.delay=0.002",
    "train.batch_size=16",
    "train.epochs=10",
]


def _epoch_of(path) -> int:
    """The number of epochs a checkpoint has finished."""
    return torch.load(path, weights_only=False)["loop"]["epoch"]


def _checkpoint_after(root, epoch: int):
    """The run's last.pt once it holds `epoch` finished epochs or more, else None."""
    found = list((root / "runs").glob("*/*/checkpoints/last.pt"))
    return found[0] if found and _epoch_of(found[0]) >= epoch else None


def test_killed_run_resumes_from_its_checkpoint_in_the_same_mlflow_run(hyrax_run, tmp_path):
    log = tmp_path / "killed.log"
    with started([HYRAX_RUN, *SLOW], tmp_path, log) as proc:
        last = wait_until(
            lambda: _checkpoint_after(tmp_path, 2), 180, "a last.pt of epoch 2 or later", log, proc
        )
        proc.kill()
        proc.wait()
    done = _epoch_of(last)
    assert done < 10, "the run finished before it could be killed"
    run_dir = last.parent.parent

    resumed = ok(hyrax_run(*SLOW, f"train.resume={run_dir}"))
    assert f"resuming from {last}" in resumed.stdout
    assert f"epoch {done + 1}/10" in resumed.stdout and f"epoch {done}/10" not in resumed.stdout
    assert _epoch_of(last) == 10
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    steps = metric_history(tmp_path, run.info.run_id, "train/loss")
    assert len(steps) >= 10


def test_resume_auto_continues_in_the_same_directory(hyrax_run, tmp_path):
    fixed = tmp_path / "runs" / "mine"
    ok(hyrax_run(f"hydra.run.dir={fixed}", "train.epochs=2", "train.resume=auto"))
    second = ok(hyrax_run(f"hydra.run.dir={fixed}", "train.epochs=4", "train.resume=auto"))
    assert "epoch 3/4" in second.stdout and "epoch 1/4" not in second.stdout
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert len(metric_history(tmp_path, run.info.run_id, "train/loss")) == 4
    assert _epoch_of(fixed / "checkpoints" / "last.pt") == 4


def test_resume_auto_without_checkpoint_starts_fresh(hyrax_run, tmp_path):
    proc = ok(hyrax_run("train.epochs=1", "train.resume=auto", "mlflow.enabled=false"))
    assert "resuming" not in proc.stdout and "epoch 1/1" in proc.stdout
    [run_dir] = run_dirs(tmp_path)
    assert _epoch_of(run_dir / "checkpoints" / "last.pt") == 1
