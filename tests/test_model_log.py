"""`mlflow.log_model` / `register_model`: a trained model logged through an `MlflowClient` into a real
SQLite store loads back with `mlflow.pytorch.load_model` and predicts exactly what it did in memory;
registering twice gives versions 1 and 2 of one name. Each test trains and traces a model, seconds of
work, so all of them run with the slow tests."""

from __future__ import annotations

import logging
import threading
import uuid

import mlflow
import pytest
import torch
from torch import nn

from hyrax import Hyrax
from hyrax.api import as_plain
from hyrax.errors import HyraxError
from hyrax.models.contract import inputs_and_labels
from hyrax.train.components import assemble, pick_device
from hyrax.train.model_log import log_model


class Gate(nn.Module):
    """Decides in Python on a tensor's value: torch.export cannot trace it."""

    def forward(self, x):
        if x.mean().item() > 0:
            return x * 2
        return x - 1


class GatedNet(nn.Module):
    def __init__(self, config, data_sample):
        super().__init__()
        x, _ = data_sample
        self.body = nn.Sequential(nn.Linear(x.shape[0], 8), Gate())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.body(x))


class LockedGatedNet(GatedNet):
    """Also holds something pickle cannot save (a lock, as a model with a cache or a client might)."""

    def __init__(self, config, data_sample):
        super().__init__(config, data_sample)
        self.lock = threading.Lock()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)


@pytest.fixture
def client(store, tmp_path):
    """A client of the shared SQLite store, and this test's experiment with its artifacts in tmp_path."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.root}/mlflow.db")
    client.experiment_id = client.create_experiment(
        store.experiment, artifact_location=(tmp_path / "artifacts").as_uri()
    )
    return client


@pytest.fixture
def loading(client):
    """`mlflow.pytorch.load_model` needs the process-wide tracking URI: set for the test, then unset."""
    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def trained(*overrides: str) -> tuple[nn.Module, object]:
    """A model trained for one epoch through the Python API, and a model-ready sample batch."""
    h = Hyrax(overrides=["train.epochs=1", "mlflow.enabled=false", *overrides])
    model = h.train()
    data, _ = assemble(as_plain(h.config), pick_device("cpu"))
    return model.cpu().eval(), data.sample_batch


def predict(model, *inputs):
    with torch.no_grad():
        return model(*inputs)


@pytest.mark.slow
def test_logged_model_loads_and_predicts_the_same(client, loading):
    model, batch = trained(
        "data_set.n_samples=300", "model.dropout=0.3"
    )  # dropout: the logged model must be in eval mode
    run_id = client.create_run(client.experiment_id).info.run_id
    uri = log_model(client, run_id, model, batch)
    assert uri.startswith("models:/")

    x = inputs_and_labels(batch)[0]
    expected = predict(model, x)
    for where in (uri, f"runs:/{run_id}/model"):
        loaded = mlflow.pytorch.load_model(where)  # a torch.export program: no pickle, no class needed
        assert torch.equal(predict(loaded, x), expected), where
    assert torch.equal(predict(loaded, x[:3]), predict(model, x[:3])), "the batch axis is dynamic"

    info = mlflow.models.get_model_info(uri)
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 20]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 4]
    assert info.saved_input_example_info is not None, "an input example is saved"
    outputs = client.get_run(run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [uri.removeprefix("models:/")]
    assert client.get_logged_model(uri.removeprefix("models:/")).status.to_proto() == 2  # READY


@pytest.mark.slow
def test_registering_twice_gives_versions_1_and_2(client, loading):
    model, batch = trained("data_set.n_samples=300")
    name = f"hyrax-test-{uuid.uuid4().hex[:8]}"
    runs = [client.create_run(client.experiment_id).info.run_id for _ in range(2)]
    for run_id in runs:
        log_model(client, run_id, model, batch, register_as=name)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    assert [(int(v.version), v.run_id) for v in versions] == [(1, runs[0]), (2, runs[1])]
    x = inputs_and_labels(batch)[0]
    assert torch.equal(predict(mlflow.pytorch.load_model(f"models:/{name}/2"), x), predict(model, x))


@pytest.mark.slow
def test_forward_taking_the_whole_batch_gets_its_tensors_in_order(client, loading):
    """Hyrax's CNN style: `to_tensor` gives (images, labels) and `forward` unpacks that tuple itself."""

    model, batch = trained("model=hyraxlike.models.ImageCNN", "data_set=hyraxlike.data.RandomImages")
    run_id = client.create_run(client.experiment_id).info.run_id
    loaded = mlflow.pytorch.load_model(log_model(client, run_id, model, batch))
    images, labels = batch
    assert torch.equal(predict(loaded, images, labels), predict(model, (images, labels)))


@pytest.mark.slow
def test_untraceable_model_is_pickled_with_a_warning(client, loading, monkeypatch, caplog):
    model, batch = trained("data_set.n_samples=300", "model=test_model_log.GatedNet")
    run_id = client.create_run(client.experiment_id).info.run_id
    with caplog.at_level(logging.WARNING, logger="hyrax"):
        uri = log_model(client, run_id, model, batch)
    [warning] = [r.getMessage() for r in caplog.records if "mlflow.log_model" in r.getMessage()]
    assert "GatedNet" in warning and "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in warning
    x = inputs_and_labels(batch)[0]
    assert torch.equal(predict(mlflow.pytorch.load_model(uri), x), predict(model, x))
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle"):
        mlflow.pytorch.load_model(uri)


@pytest.mark.slow
def test_a_model_neither_traceable_nor_picklable_fails_with_both_reasons(client):
    model, batch = trained("data_set.n_samples=300", "model=test_model_log.LockedGatedNet")
    run_id = client.create_run(client.experiment_id).info.run_id
    with pytest.raises(HyraxError, match="data-dependent") as failed:
        log_model(client, run_id, model, batch)
    assert failed.value.key == "mlflow.log_model" and "pickled" in failed.value.message
    [logged] = client.search_logged_models(experiment_ids=[client.experiment_id])
    assert logged.status.to_proto() == 3  # FAILED


@pytest.mark.slow
def test_a_training_run_logs_and_registers_its_best_checkpoint(store, tmp_path):
    from hyraxtest import ok, run_hyrax

    from hyrax import tags
    from hyrax.train import checkpoint

    name = f"clf-{uuid.uuid4().hex[:8]}"
    args = ["data_set.n_samples=240", "train.epochs=2", f"mlflow.register_model={name}", *store.overrides]
    ok(run_hyrax(args, tmp_path))
    (run,) = store.runs()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store.root}/mlflow.db")
    (version,) = client.search_model_versions(f"name='{name}'")
    assert version.run_id == run.info.run_id and int(version.version) == 1
    h = Hyrax(overrides=["data_set.n_samples=240", "mlflow.enabled=false"])
    data, model = assemble(as_plain(h.config), pick_device("cpu"))
    best = checkpoint.checkpoint_dir(tmp_path / run.data.tags[tags.RUN_DIR]) / checkpoint.BEST
    model.load_state_dict(checkpoint.load(best)["model"])
    x = inputs_and_labels(data.sample_batch)[0]
    mlflow.set_tracking_uri(f"sqlite:///{store.root}/mlflow.db")
    try:
        for uri in (f"runs:/{run.info.run_id}/model", f"models:/{name}/1"):
            loaded = mlflow.pytorch.load_model(uri)
            assert torch.allclose(predict(loaded, x), predict(model.eval(), x), atol=1e-6), uri
    finally:
        mlflow.set_tracking_uri(None)
