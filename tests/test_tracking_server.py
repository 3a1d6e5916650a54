"""A real `mlflow server` on 127.0.0.1 that goes away mid-run, and a tracking URI that carries a password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hyraxtest import HYRAX_RUN, free_port, log_text, mlflow_server, ok, run_hyrax, started, stop, wait_until

pytestmark = pytest.mark.slow  # real servers and hyrax-run subprocesses

SECRET = "s3cr3tPW"


def _client(port: int):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")


def _the_run(port: int):
    client = _client(port)
    experiment = client.get_experiment_by_name("hyrax")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return runs[0] if runs else None


def _epochs_logged(port: int) -> int:
    run = _the_run(port)
    return len(_client(port).get_metric_history(run.info.run_id, "train/loss")) if run else 0


LONG_RUN = ["train.epochs=40", "data_set.n_samples=3000", "train.progress=false"]


def test_a_server_that_restarts_mid_run_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    run_log = tmp_path / "run.log"
    command = [HYRAX_RUN, *LONG_RUN, f"mlflow.tracking_uri={uri}"]
    with mlflow_server(tmp_path, port) as (_, server), started(command, tmp_path, run_log) as run:
        wait_until(lambda: _epochs_logged(port) >= 2, 120, "two epochs in MLflow", run_log, run)
        stop(server)
        wait_until(lambda: "unreachable" in log_text(run_log), 60, "the run noticing", run_log, run)
        with mlflow_server(tmp_path, port, "server2.log"):
            assert run.wait(timeout=240) == 0, log_text(run_log)
            finished = _the_run(port)
            assert finished.info.status == "FINISHED"
            assert _epochs_logged(port) == 40  # every epoch's metrics, those of the outage too
            assert "objective" in finished.data.metrics
    text = log_text(run_log)
    assert "every write was stored after retrying" in text, text
    assert not list(tmp_path.glob("runs/*/*/mlflow_unsent.jsonl"))


def test_a_server_that_stays_away_costs_no_metrics_and_says_what_was_not_stored(tmp_path: Path) -> None:
    port = free_port()
    run_log = tmp_path / "run.log"
    args = [*LONG_RUN, f"mlflow.tracking_uri=http://127.0.0.1:{port}", "mlflow.outage_wait_s=2"]
    with mlflow_server(tmp_path, port) as (_, server), started([HYRAX_RUN, *args], tmp_path, run_log) as run:
        wait_until(lambda: _epochs_logged(port) >= 2, 120, "two epochs in MLflow", run_log, run)
        stored = _epochs_logged(port)
        stop(server)
        assert run.wait(timeout=240) == 0, log_text(run_log)  # the training itself succeeded
    text = log_text(run_log)
    assert "were not stored" in text and "FINISHED" in text, text
    [unsent] = tmp_path.glob("runs/*/*/mlflow_unsent.jsonl")
    assert str(unsent) in text
    writes = [json.loads(line) for line in unsent.read_text().splitlines()]
    steps = {m[3] for w in writes if w["kind"] == "metrics" for m in w["payload"] if m[0] == "train/loss"}
    assert len(steps) >= 40 - stored - 1, (stored, sorted(steps))  # what the server missed is kept
    assert {"kind": "status", "payload": "FINISHED"}.items() <= writes[-1].items()


def test_a_password_in_the_tracking_uri_is_in_no_log_param_tag_or_artifact(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
    with mlflow_server(tmp_path, port):
        proc = ok(
            run_hyrax(
                ["-m", f"mlflow.tracking_uri={uri}", "optimizer.lr=0.001,0.01", "train.epochs=1"],
                tmp_path,
                timeout=300,
            )
        )
        client = _client(port)
        experiment = client.get_experiment_by_name("hyrax")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 3  # the sweep's parent and its two jobs
        for run in runs:
            assert SECRET not in json.dumps(run.data.params), run.data.params
            assert SECRET not in json.dumps(run.data.tags), run.data.tags
            artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
            for file in (p for p in artifacts.rglob("*") if p.is_file()):
                assert SECRET not in file.read_text(errors="replace"), file
        jobs = [r for r in runs if r.data.tags.get("hyrax.kind") != "sweep"]
        commands = [r.data.tags["hyrax.command"].replace("\\", "") for r in runs]  # jobs' colons: \:
        assert all(f"mlflow.tracking_uri=http://alice:***@127.0.0.1:{port}" in c for c in commands), commands
        assert any(list(Path(client.download_artifacts(r.info.run_id, "config")).iterdir()) for r in jobs)
    assert SECRET not in proc.stdout + proc.stderr
    logs = [p for p in tmp_path.rglob("*.log") if not p.name.startswith("server")]
    assert logs, "the runs wrote no log files"
    for log in logs:
        assert SECRET not in log.read_text(errors="replace"), log
