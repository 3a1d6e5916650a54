"""Tracking into a real `mlflow server` on 127.0.0.1, as a cluster user with many jobs would."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest
from hyraxtest import BIN, ok


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server with proxied artifacts, stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    with open(root / "server.log", "w") as server_log:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{root}/server.db",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--workers",
                "1",
            ],
            cwd=root,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not come up:\n" + (root / "server.log").read_text())
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_sweep_tracks_into_a_server_named_by_the_environment(hyrax_run, server):
    proc = ok(
        hyrax_run(
            "-m",
            "optimizer.lr=0.001,0.01",
            "train.epochs=1",
            "mlflow.log_checkpoint=true",
            env={"MLFLOW_TRACKING_URI": server},
        )
    )
    assert not (proc.cwd / "mlflow.db").exists(), "MLFLOW_TRACKING_URI was not honoured"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("hyrax")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("hyrax.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert "val/loss" in child.data.metrics and child.data.params["train.epochs"] == "1"
        names = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")}
        assert names == {"checkpoints/best.pt"}, "artifacts did not travel through the server"
