"""Tracking into a real `mlflow server` on 127.0.0.1, as a cluster user with many jobs would."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from hyraxtest import BIN, ok, started, wait_until

pytestmark = pytest.mark.slow  # a real server and a sweep through hyrax-run


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    """Whether an HTTP GET of `url` gets an answer."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server with proxied artifacts, stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    command = [
        BIN / "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/server.db",
        "--artifacts-destination",
        root / "artifacts",
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with started(command, root, log) as proc:
        wait_until(
            lambda: _answers(f"{url}/health"), 90, f"the mlflow server answering {url}/health", log, proc
        )
        yield url
        assert proc.poll() is None, "the mlflow server died during the tests:\n" + log.read_text()


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
