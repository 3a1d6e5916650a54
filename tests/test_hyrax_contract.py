"""Each point of Hyrax's model and data set contract (seeds 000 and 001, and Hyrax's code), one test each."""

from __future__ import annotations

import logging
from typing import ClassVar

import hyraxlike.data
import hyraxlike.models
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from hyrax import Hyrax, HyraxError
from hyrax.data_sets import HyraxDataset
from hyrax.data_sets.items import collate_function, normalize
from hyrax.models import hyrax_model


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def session(model: str, data_set: str, *overrides: str) -> Hyrax:
    """A two-epoch session choosing its classes by Hyrax's `name` keys."""
    h = Hyrax(overrides=["train.epochs=2", "data_loader.batch_size=16", *overrides])
    h.config["model"]["name"] = model
    h.config["data_set"]["name"] = data_set
    return h


def run_of(store):
    """The one MLflow run the test tracked."""
    [run] = store.runs()
    return run


# --- the model contract -------------------------------------------------------------------------------


@hyrax_model
class SampleProbe(nn.Module):
    """Records what Hyrax hands to __init__ and the methods."""

    seen: ClassVar[dict] = {}

    def __init__(self, config, data_sample, shape):
        super().__init__()
        SampleProbe.seen.update(sample=data_sample, shape=shape)
        self.net = nn.Linear(int(np.prod(shape)), 3)

    def forward(self, x):
        SampleProbe.seen["forward"] = x
        return self.net(torch.flatten(x, 1))

    @staticmethod
    def to_tensor(data_dict):
        SampleProbe.seen.setdefault("to_tensor", []).append(isinstance(data_dict, dict))
        return np.asarray(data_dict["data"]["image"], dtype=np.float32), np.asarray(
            data_dict["data"]["label"]
        )


def test_data_sample_is_one_item_and_shape_its_shape(tmp_path):
    session("SampleProbe", "RandomImages", "mlflow.enabled=false").train()
    x, y = SampleProbe.seen["sample"]
    assert tuple(x.shape) == (2, 8, 8) and y.dim() == 0, "one item, without the batch axis (seed 001)"
    assert SampleProbe.seen["shape"] == (2, 8, 8), "seed 000's shape is the item shape"
    assert set(SampleProbe.seen["to_tensor"]) == {True}


def test_data_sample_switch_gives_a_batch_of_one(tmp_path):
    session("SampleProbe", "RandomImages", "mlflow.enabled=false", "train.data_sample=batch").train()
    x, _ = SampleProbe.seen["sample"]
    assert tuple(x.shape) == (1, 2, 8, 8) and SampleProbe.seen["shape"] == (2, 8, 8)


class LinearOnItem(nn.Module):
    """A linear model sized from the first part of its (x, y) data sample."""

    def __init__(self, config, data_sample):
        super().__init__()
        self.net = nn.Linear(data_sample[0].shape[0], 2)

    def forward(self, x):
        return self.net(x)


@hyrax_model
class TensorItemsNet(LinearOnItem):
    """Has a to_tensor that must not be called for tensor items."""

    @staticmethod
    def to_tensor(data_dict):
        raise AssertionError("to_tensor is for dict items only")


class PairItems(HyraxDataset, Dataset):
    def __init__(self, config):
        super().__init__(config)
        self.x = torch.randn(64, 5)
        self.y = (self.x[:, 0] > 0).long()

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __len__(self):
        return 64


def test_to_tensor_only_packs_dict_items(tmp_path):
    h = session("TensorItemsNet", "PairItems", "mlflow.enabled=false")
    assert isinstance(h.train(), TensorItemsNet)
    assert h.infer().predictions.shape == (64, 2), "infer also batches tensor items without to_tensor"


@hyrax_model
class OwnStepIgnoresLabels(nn.Module):
    """Its output cannot be judged against the labels: it has its own step, so Hyrax must not try."""

    def __init__(self, config, data_sample):
        super().__init__()
        self.net = nn.Linear(5, 7)

    def forward(self, x):
        return self.net(x)

    def train_step(self, batch):
        x, _ = batch
        self.optimizer.zero_grad()
        loss = self(x).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss}


def test_preflight_judges_the_criterion_only_for_the_default_step(tmp_path):
    h = session("OwnStepIgnoresLabels", "PairItems", "mlflow.enabled=false")
    assert isinstance(h.train(), OwnStepIgnoresLabels)


def test_model_defined_criterion_is_kept_and_config_values_named(store, caplog):
    h = session("ContrastiveNet", "RandomImages", *store.overrides)
    h.config["criterion"]["label_smoothing"] = 0.1
    with caplog.at_level(logging.INFO, logger="hyrax"):
        model = h.train()
    assert type(model.criterion).__name__ == "NTXent", "the model's own loss, not cross entropy"
    assert "using ContrastiveNet's own criterion (NTXent)" in caplog.text
    assert "criterion.label_smoothing do nothing" in caplog.text
    losses = store.history(run_of(store).info.run_id, "train/loss")
    assert all(v > 0 for v in losses), "NT-Xent is positive; a cross entropy on it was not"


def test_validate_and_test_batch_spellings_are_used(store):
    session("ImageCNN", "RandomImagesIterable", *store.overrides).train()
    run = run_of(store)
    assert "val/loss" in run.data.metrics, "validate_batch measured the (iterable) validate split"
    assert "test/accuracy" in run.data.metrics, "test_batch's own metric, on the best checkpoint"


def test_unsupervised_model_without_validate_step_succeeds_on_train_loss(store, caplog):
    h = session("SeedAutoencoder", "FluxData", "train.epochs=3", *store.overrides)
    with caplog.at_level(logging.WARNING, logger="hyrax"):
        h.train()
    run = run_of(store)
    assert run.info.status == "FINISHED"
    losses = store.history(run.info.run_id, "train/loss")
    assert h.objective == pytest.approx(min(losses)), "the objective is the best epoch's train/loss"
    assert caplog.text.count("judging best checkpoints, early stopping and the objective on train/loss") == 1
    assert (h.last_run_dir / "checkpoints" / "best.pt").is_file()


# --- the data set contract ----------------------------------------------------------------------------


class MetaData(HyraxDataset, Dataset):
    """super().__init__(config, metadata_table) with a table; no ids() of its own."""

    def __init__(self, config):
        table = pd.DataFrame({"object_id": [f"m{i}" for i in range(30)], "ra": np.arange(30) * 1.5})
        super().__init__(config, table)

    def __getitem__(self, i):
        return {"image": np.full(4, float(i), dtype=np.float32), "label": i % 2}

    def __len__(self):
        return 30


def test_metadata_interface_and_ids_from_the_table():
    ds = MetaData(None)
    assert ds.metadata_fields() == ["object_id", "ra"]
    rows = ds.metadata([1, 3], ["ra"])
    assert list(rows["ra"]) == [1.5, 4.5]
    assert list(ds.ids())[:2] == ["m0", "m1"]
    assert ds.get_ra(2) == 3.0, "metadata columns become getters, as in Hyrax"
    assert ds.is_map() and not ds.is_iterable()
    assert ds.sample_data()["label"] == 0
    with pytest.raises(HyraxError, match="none of the metadata fields"):
        ds.metadata([0], ["dec"])


class Stream(HyraxDataset, IterableDataset):
    def __init__(self, config):
        super().__init__(config)

    def __iter__(self):
        for _ in range(12):
            yield {"image": np.zeros(3, dtype=np.float32), "label": 0}


def test_iterable_ids_and_sample_need_no_len():
    ds = Stream(None)
    assert ds.is_iterable() and not ds.is_map()
    assert list(ds.ids()) == [str(i) for i in range(12)]
    assert ds.sample_data()["label"] == 0


def test_items_in_data_form_pass_through_and_plain_dicts_are_wrapped():
    item = {"data": {"image": 1, "object_id": "a"}, "object_id": "a"}
    assert normalize(item, 5) == {"data": {"image": 1, "object_id": "a"}, "object_id": "a"}
    assert normalize({"image": 1}, 5) == {"data": {"image": 1}, "object_id": "5"}


class PaddedCurves(HyraxDataset, Dataset):
    """A data set whose own collate pads variable-length curves (as Hyrax's collate examples do)."""

    def __init__(self, config):
        super().__init__(config)
        rng = np.random.default_rng(0)
        self.curves = [rng.normal(size=rng.integers(3, 9)).astype(np.float32) for _ in range(40)]

    def __getitem__(self, i):
        return {"curve": self.curves[i], "label": int(len(self.curves[i]) > 5)}

    def __len__(self):
        return len(self.curves)

    def collate(self, samples):
        padded = np.zeros((len(samples), 8), dtype=np.float32)
        for row, sample in enumerate(samples):
            padded[row, : len(sample["curve"])] = sample["curve"]
        return {"curve": padded, "label": np.array([s["label"] for s in samples])}


@hyrax_model
class CurveNet(LinearOnItem):
    """Sized from the padded curves its to_tensor hands over."""

    @staticmethod
    def to_tensor(data_dict):
        return data_dict["data"]["curve"], data_dict["data"]["label"]


def test_a_data_sets_own_collate_is_used(tmp_path):
    batch = collate_function(PaddedCurves(None))([(i, PaddedCurves(None)[i]) for i in range(4)])
    assert batch["data"]["curve"].shape == (4, 8) and batch["object_id"] == ["0", "1", "2", "3"]
    assert isinstance(session("CurveNet", "PaddedCurves", "mlflow.enabled=false").train(), CurveNet)


def test_getter_data_set_reads_the_named_fields(tmp_path):
    h = session("ImageCNN", "SurveyData", "mlflow.enabled=false")
    h.set_config("data_set.fields", ["image", "label"])
    h.set_config(
        "data_request",
        {"train": {"data": {"dataset_class": "SurveyData", "dataset_config": {"n_objects": 30}}}},
    )
    h.train()
    result = h.infer()
    assert len(result) == 30, "dataset_config's n_objects was read by the data set through config.get"
    from hyrax.train import checkpoint

    saved = checkpoint.load(h.last_run_dir / "checkpoints" / "last.pt")["config"]
    assert saved["hyraxlike"]["SurveyData"]["note"].startswith("a table named after the package"), (
        "the package's top-level [hyraxlike.SurveyData] defaults reached the config"
    )
    assert result.ids[0] == "obj-00000" and result.by_id("obj-00002").shape == (3,)


# --- Hyrax's config sections --------------------------------------------------------------------------


def test_hyrax_sections_mean_what_they_mean_in_hyrax(tmp_path):
    h = session("Loopback", "FixtureRandom", "mlflow.enabled=false")
    h.config["data_set"]["size"] = 50
    h.config["data_set"]["seed"] = 7
    h.config["data_set"]["train_size"] = 0.6
    h.config["data_set"]["validate_size"] = 0.2
    h.config["data_set"]["test_size"] = 0.2
    h.config["general"]["data_dir"] = str(tmp_path / "somewhere")
    h.config["general"]["results_dir"] = str(tmp_path / "results")
    h.config["data_loader"]["batch_size"] = 5
    h.config["train"]["resume"] = False
    assert h.prepare().data_directory == str(tmp_path / "somewhere"), "data_location from general.data_dir"
    h.train()
    from hyrax.train import checkpoint

    state = checkpoint.load(h.last_run_dir / "checkpoints" / "last.pt")
    assert state["loop"]["step"] == 2 * 6, "30 train items in batches of 5, two epochs"
    assert h.last_run_dir.is_relative_to(tmp_path / "results")
    model_config = state["config"]
    assert model_config["train"]["batch_size"] == 5 and model_config["train"]["resume"] == "none"


@hyrax_model
class May2025Net(nn.Module):
    """Seed 000's to_tensor: the batch's fields at the top of the dict, a list of per-item tensors back."""

    def __init__(self, config, shape):
        super().__init__()
        self.net = nn.Linear(shape[0], 3)

    def forward(self, x):
        return self.net(x)

    def train_step(self, batch):
        self.optimizer.zero_grad()
        loss = self(batch).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        return {"loss": [loss.item()] * len(batch)}

    @staticmethod
    def to_tensor(batch_dict):
        return [
            torch.cat([torch.as_tensor(g), torch.as_tensor(r)])
            for g, r in zip(batch_dict["flux_g"], batch_dict["flux_r"], strict=True)
        ]


def test_seed_000_to_tensor_reads_fields_at_the_top_and_returns_a_list(tmp_path):
    h = session("May2025Net", "FluxData", "mlflow.enabled=false")
    h.train()
    assert len(h.infer()) == 200


def test_configured_collate_fn_is_used(tmp_path):
    h = session("ImageCNN", "RandomImagesIterable", "mlflow.enabled=false")
    h.config["data_loader"]["collate_fn"] = "hyrax.data_sets.iterable_dataset_collate"
    assert isinstance(h.train(), hyraxlike.models.ImageCNN)
    h.config["data_loader"]["collate_fn"] = "hyraxlike.data.no_such_function"
    with pytest.raises(HyraxError, match="cannot find a collate function 'hyraxlike.data.no_such_function'"):
        h.train()


@pytest.mark.slow
def test_a_batch_of_one_model_in_item_mode_shows_its_error_and_the_switch(hyrax_run, tmp_path):
    proc = hyrax_run("model=hyraxlike.models.BatchImageCNN", "data_set=hyraxlike.data.RandomImages")
    assert proc.returncode == 1, "a crash in the user's __init__, shown as theirs"
    assert "hyraxlike/models.py" in proc.stderr and "not enough values to unpack" in proc.stderr
    assert "needs train.data_sample=batch" in proc.stderr


@hyrax_model
class LoopbackWithoutValidateStep(nn.Module):
    """Hyrax 0.6's loopback: its own train step, no validate step, output = input (no criterion fits)."""

    def __init__(self, config, data_sample=None):
        super().__init__()
        self.unused = nn.Linear(1, 1)

    def forward(self, x):
        return x[0] if isinstance(x, tuple) else x

    def train_step(self, batch):
        return {"loss": 0.0}

    @staticmethod
    def to_tensor(data_dict):
        return np.asarray(data_dict["data"]["image"]), np.asarray(data_dict["data"]["label"])


def test_own_step_model_whose_output_no_criterion_judges_validates_on_train_loss(store):
    h = session("LoopbackWithoutValidateStep", "RandomImages", *store.overrides)
    h.train()
    run = run_of(store)
    assert run.info.status == "FINISHED" and "val/loss" not in run.data.metrics
    assert h.objective == 0.0
