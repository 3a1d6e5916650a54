"""Helpers for tests that run the real `hyrax-run` and read the real MLflow store it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def hyrax_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment runs get: the user package importable, no inherited tracking URI."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


def mlflow_runs(cwd: Path, experiment: str = "hyrax") -> list:
    """All runs of the experiment in `<cwd>/mlflow.db`, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "no MLflow experiment was created"
    runs = client.search_runs([exp.experiment_id])
    return sorted(runs, key=lambda r: r.info.start_time)


def metric_history(cwd: Path, run_id: str, key: str) -> list[float]:
    """The logged values of one metric, in step order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def run_dirs(cwd: Path) -> list[Path]:
    """The run directories `hyrax-run` made under `<cwd>/runs`, oldest first."""
    return sorted((p for p in (cwd / "runs").glob("*/*") if p.is_dir()), key=lambda p: p.stat().st_mtime)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert a run succeeded, showing its output when not."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc


def user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert a run failed as bad input: exit 2, one message with each needle, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in:\n{proc.stderr}"
    return proc.stderr


def parent_and_children(runs: list) -> tuple[list, list]:
    """A multirun's MLflow runs split into its parent run(s) and the job/trial child runs."""
    parents = [r for r in runs if r.data.tags.get("hyrax.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children
