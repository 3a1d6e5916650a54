"""train.precision, train.accumulate_grad_batches and train.data_on_device: what each changes in training."""

from __future__ import annotations

import pytest
import torch
from hyraxtest import run_hyrax, user_error
from torch import nn
from torch.utils.data import Dataset

from hyrax import Hyrax, HyraxError
from hyrax.data_sets import HyraxDataset
from hyrax.data_sets.builtin import SyntheticClassification
from hyrax.train.precision import make_precision

QUIET = ["mlflow.enabled=false", "train.tensorboard=false"]


class DtypeNet(nn.Module):
    """Notes the dtype of what its layers compute while training (autocast changes it)."""

    def __init__(self, in_features: int = 20, classes: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, classes))
        self.training_dtypes: list[torch.dtype] = []  # the pre-training check's forward included

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.training_dtypes.append(out.dtype)
        return out


class AccumulationReader(nn.Module):
    """Its own train_step reads the accumulation Hyrax tells it."""

    def __init__(self, in_features: int = 20, classes: int = 4):
        super().__init__()
        self.net = nn.Linear(in_features, classes)
        self.told: set[int] = set()

    def forward(self, x):
        return self.net(x)

    def train_step(self, batch):
        x, y = batch
        self.told.add(self.accumulate_grad_batches)
        self.optimizer.zero_grad()
        loss = self.criterion(self(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss}


class ItemByItem(HyraxDataset, Dataset):
    """A data set read item by item (not in memory as tensors)."""

    def __init__(self, config):
        super().__init__(config)
        self.data = SyntheticClassification(n_samples=100)

    def __getitem__(self, i):
        return self.data.x[i], self.data.y[i]

    def __len__(self):
        return 100


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_bf16_mixed_trains_under_bfloat16_autocast_and_learns():
    h = Hyrax(
        overrides=[f"model={__name__}.DtypeNet", "train.precision=bf16-mixed", "train.epochs=4", *QUIET]
    )
    h.config["optimizer"]["lr"] = 0.01
    model = h.train()
    assert model.training_dtypes.count(torch.bfloat16) == 4 * 25  # every step of 4 epochs of 1600 / 64
    float32 = Hyrax(overrides=[f"model={__name__}.DtypeNet", "train.epochs=1", *QUIET])
    assert set(float32.train().training_dtypes) == {torch.float32}
    assert h.objective < 0.9  # val/loss of 4 clusters: about 1.39 untrained


def test_precision_errors_name_the_key_and_the_fix():
    with pytest.raises(HyraxError, match="16-mixed needs a GPU") as err:
        make_precision("16-mixed", torch.device("cpu"))
    assert err.value.key == "train.precision" and "bf16-mixed" in err.value.fix
    with pytest.raises(HyraxError, match="'fp8' is not a precision") as err:
        make_precision("fp8", torch.device("cpu"))
    assert "32, bf16-mixed, 16-mixed" in err.value.fix
    assert make_precision("bf16", torch.device("cpu")).dtype == torch.bfloat16  # Lightning's short names
    assert make_precision(32, torch.device("cpu")).dtype is None


@pytest.mark.slow
def test_16_mixed_on_the_cpu_is_exit_2_from_the_command_line(tmp_path):
    user_error(
        run_hyrax(["train.precision=16-mixed", "train.device=cpu", *QUIET], tmp_path),
        "train.precision=16-mixed needs a GPU",
    )
    assert not (tmp_path / "runs").exists()  # refused before anything started
    lightning = ["model=lightningpkg.modules.Classifier", "train.precision=16-mixed", "train.device=cpu"]
    user_error(run_hyrax([*lightning, *QUIET], tmp_path), "train.precision=16-mixed needs a GPU")


def _weights_after_one_epoch(batch_size: int, accumulate: int) -> list[torch.Tensor]:
    h = Hyrax(
        overrides=[
            "model=mlp",
            "optimizer=sgd",
            "data_set.n_samples=400",  # a train split of 320: ten batches of 32
            f"train.batch_size={batch_size}",
            f"train.accumulate_grad_batches={accumulate}",
            "data_loader.shuffle=false",
            "train.epochs=1",
            *QUIET,
        ]
    )
    return [p.detach().clone() for p in h.train().parameters()]


def test_accumulating_four_batches_of_8_steps_like_one_batch_of_32():
    accumulated = _weights_after_one_epoch(8, 4)
    whole = _weights_after_one_epoch(32, 1)
    every_batch = _weights_after_one_epoch(8, 1)
    assert all(torch.allclose(a, w, atol=1e-6) for a, w in zip(accumulated, whole, strict=True))
    assert not all(torch.allclose(a, e, atol=1e-4) for a, e in zip(accumulated, every_batch, strict=True))


def test_a_models_own_step_is_told_the_accumulation():
    h = Hyrax(
        overrides=[
            f"model={__name__}.AccumulationReader",
            "train.accumulate_grad_batches=3",
            "train.epochs=1",
            *QUIET,
        ]
    )
    assert h.train().told == {3}


def test_data_on_device_true_needs_an_in_memory_data_set():
    h = Hyrax(
        overrides=[f"data_set={__name__}.ItemByItem", "train.data_on_device=true", "train.epochs=1", *QUIET]
    )
    with pytest.raises(HyraxError, match="needs an in-memory data set") as err:
        h.train()
    assert err.value.key == "train.data_on_device"
    h = Hyrax(overrides=["train.data_on_device=sometimes", "train.epochs=1", *QUIET])
    with pytest.raises(HyraxError, match="train.data_on_device must be auto, true or false, not 'sometimes'"):
        h.train()
    trained = Hyrax(overrides=["train.data_on_device=true", "train.epochs=1", *QUIET])
    assert trained.train() is not None  # in memory on the CPU: already where training reads it
