"""The Python API: same code path as the CLI, for notebooks (classes defined inline work by bare name)."""

from __future__ import annotations

import math
import sys

import h5py
import numpy as np
import pytest
import torch
from hyraxtest import run_hyrax
from torch import nn
from torch.utils.data import Dataset

from hyrax import Hyrax, HyraxError
from hyrax.data_sets import HyraxDataset
from hyrax.data_sets.batches import split_indices
from hyrax.models import hyrax_model


@hyrax_model
class InlineNet(nn.Module):
    def __init__(self, config, data_sample, hidden: int = 8):
        super().__init__()
        self.config_seen = config
        self.net = nn.Sequential(nn.Linear(data_sample[0].shape[0], hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.net(x)


class InlineData(HyraxDataset, Dataset):
    def __init__(self, config):
        super().__init__(config)
        self.x = torch.randn(100, 5)
        self.y = (self.x.sum(dim=1) > 0).long()

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __len__(self):
        return 100


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_api_prepare_train_infer_with_edited_config(store):
    h = Hyrax(overrides=["train.epochs=2", *store.overrides])
    h.config["optimizer"]["lr"] = 0.01
    ds = h.prepare()
    assert len(ds) == 2000
    model = h.train()
    assert (
        isinstance(model, torch.nn.Module) and isinstance(h.objective, float) and math.isfinite(h.objective)
    )
    [run] = store.runs()
    assert run.data.params["optimizer.lr"] == "0.01" and run.info.status == "FINISHED"
    result = h.infer()
    assert result.predictions.shape == (2000, 4) and len(result) == 2000
    assert np.array_equal(np.load(result.path), result.predictions) and result[3].shape == (4,)


def test_inline_classes_by_bare_name():
    h = Hyrax(
        overrides=[
            "model=InlineNet",
            "data_set=InlineData",
            "model.hidden=4",
            "train.epochs=2",
            "mlflow.enabled=false",
        ]
    )
    assert h.config["model"]["_target_"].endswith("InlineNet")
    model = h.train()
    assert isinstance(model, InlineNet) and model.net[0].out_features == 4, "model.hidden=4 reached it"
    assert math.isfinite(h.objective)


def test_model_config_is_read_only():
    h = Hyrax(overrides=["model=InlineNet", "data_set=InlineData", "train.epochs=1", "mlflow.enabled=false"])
    from hyrax.api import as_plain
    from hyrax.train.components import assemble, pick_device

    _, model = assemble(as_plain(h.config), pick_device("cpu"))
    assert model.config_seen["train"]["epochs"] == 1
    with pytest.raises(TypeError):
        model.config_seen["train"]["epochs"] = 5


def _write_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["features"], f["y"] = x, y
    header = ",".join([f"f{i}" for i in range(6)] + ["label"])
    np.savetxt(tmp_path / "d.csv", np.column_stack([x, y]), delimiter=",", header=header, comments="")


@pytest.mark.parametrize("option,extra", [("numpy", []), ("hdf5", ["data_set.x_key=features"]), ("csv", [])])
def test_file_data_sets(tmp_path, option, extra):
    _write_files(tmp_path)
    suffix = {"numpy": "npz", "hdf5": "h5", "csv": "csv"}[option]
    h = Hyrax(
        overrides=[
            f"data_set={option}",
            f"data_set.path={tmp_path}/d.{suffix}",
            *extra,
            "train.epochs=10",
            "optimizer.lr=0.01",
            "mlflow.enabled=false",
            "train.objective.metric=val/accuracy",
        ]
    )
    h.train()
    assert h.objective > 0.6


def test_hdf5_missing_key_names_the_key(tmp_path):
    _write_files(tmp_path)
    h = Hyrax(overrides=["data_set=hdf5", f"data_set.path={tmp_path}/d.h5", "mlflow.enabled=false"])
    with pytest.raises(HyraxError, match="data_set.x_key"):
        h.prepare()


def test_nan_mode_zero_makes_nan_inputs_trainable(tmp_path):
    x = np.random.default_rng(1).normal(size=(100, 4)).astype(np.float32)
    x[::7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    base = ["data_set=numpy", f"data_set.path={tmp_path}/nan.npz", "train.epochs=1", "mlflow.enabled=false"]
    with pytest.raises(HyraxError, match="loss became nan"):
        Hyrax(overrides=base).train()
    h = Hyrax(overrides=[*base, "data_set.nan_mode=zero"])
    h.train()
    assert math.isfinite(h.objective)


def test_splits_are_disjoint_and_reproducible():
    a = split_indices(100, {"train": 0.7, "validate": 0.2, "test": 0.1}, seed=3)
    b = split_indices(100, {"train": 0.7, "validate": 0.2, "test": 0.1}, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "validate", "test")] == [70, 20, 10]
    assert len(set(np.concatenate(list(a.values())))) == 100


def test_without_validate_split_best_and_objective_use_train_loss(caplog):
    from hyrax.train import checkpoint

    h = Hyrax(
        overrides=[
            "train.split.validate=0",
            "data_set.n_samples=400",
            "train.epochs=2",
            "mlflow.enabled=false",
        ]
    )
    h.train()
    best = checkpoint.load(h.last_run_dir / "checkpoints" / "best.pt")["loop"]
    assert h.objective == best["best_metrics"]["train/loss"] == best["best"]
    assert (
        caplog.text.count(
            "no validate split: judging best checkpoints, early stopping and the objective on train/loss"
        )
        == 1
    )


def test_early_stopping_stops_when_the_monitor_stalls():
    from hyrax.train import checkpoint

    h = Hyrax(
        overrides=[
            "optimizer.lr=0.0",
            "train.epochs=10",
            "train.early_stopping.patience=2",
            "mlflow.enabled=false",
        ]
    )
    h.train()
    state = checkpoint.load(h.last_run_dir / "checkpoints" / "last.pt")
    assert state["loop"]["epoch"] == 3 and state["loop"]["bad_epochs"] == 2


def test_list_loss_validate_step_and_infer_batch(store):
    h = Hyrax(
        overrides=[
            *store.overrides,
            "model=userpkg.models.ListLossNet",
            "data_set=userpkg.data.ImageLabelData",
            "train.epochs=3",
            "optimizer.lr=0.01",
            "train.objective.metric=val/top1",
        ]
    )
    h.train()
    assert h.objective > 0.5, "validate_step's metrics are the validation metrics"
    probabilities = h.infer().predictions
    assert probabilities.shape == (240, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_best_checkpoint_logged_when_asked(store):
    from mlflow.tracking import MlflowClient

    Hyrax(overrides=["train.epochs=1", "mlflow.log_checkpoint=true", *store.overrides]).train()
    [run] = store.runs()
    client = MlflowClient(f"sqlite:///{store.root}/mlflow.db")
    names = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert names == ["checkpoints/best.pt"]


@pytest.mark.slow
def test_classes_defined_in_main_as_in_a_notebook(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text("""
import torch
from torch import nn
from hyrax import Hyrax
from hyrax.models import hyrax_model

@hyrax_model
class NotebookNet(nn.Module):
    def __init__(self, data_sample, width: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(data_sample[0].shape[0], width), nn.ReLU(), nn.Linear(width, 4))
    def forward(self, x):
        return self.net(x)

h = Hyrax(overrides=["model=NotebookNet", "model.width=6", "train.epochs=1", "mlflow.enabled=false"])
print("target", h.config["model"]["_target_"])
model = h.train()
print("trained", type(model).__name__, model.net[0].out_features)
print("objective", h.objective)
""")
    out = run_hyrax([str(script)], tmp_path, timeout=120, program=sys.executable)
    assert out.returncode == 0, out.stderr
    assert "target __main__.NotebookNet" in out.stdout and "trained NotebookNet 6" in out.stdout
    objective = float(out.stdout.split("objective ", 1)[1].split()[0])
    assert math.isfinite(objective)
