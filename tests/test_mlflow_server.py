"""Tracking into a real `mlflow server` on 127.0.0.1, as a cluster user with many jobs would."""

from __future__ import annotations

import pytest
from hyraxtest import log_text, mlflow_server, ok

pytestmark = pytest.mark.slow  # a real server and a sweep through hyrax-run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server with proxied artifacts, stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(root) as (url, proc):
        yield url
        assert proc.poll() is None, "the mlflow server died during the tests:\n" + log_text(
            root / "server.log"
        )


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
