"""Hyrax users' classes run unchanged: every pairing of Hyrax-style models and data sets (tests/hyraxlike)
trains when chosen the way Hyrax's documentation chooses them, `h.config[group]["name"] = ...`, and
through `hyrax-run`; loss falls where there is something to learn, and `infer` works afterwards."""

from __future__ import annotations

import math

import hyraxlike.data
import hyraxlike.models  # noqa: F401
import numpy as np
import pytest
from hyraxlike.data import write_csv
from hyraxtest import metric_history, mlflow_runs, ok

from hyrax import Hyrax

# model, data set, extra settings, whether the loss must fall (the loopback model learns nothing)
PAIRINGS = [
    ("ImageCNN", "RandomImages", {}, True),
    ("ImageCNN", "RandomImagesIterable", {}, True),
    ("ImageCNN", "SurveyData", {}, True),
    ("ImageAutoencoder", "RandomImages", {}, True),
    ("ImageAutoencoder", "RandomImagesIterable", {}, True),
    ("ImageAutoencoder", "SurveyData", {"data_set.fields": ["image", "object_id"]}, True),
    ("Loopback", "RandomImages", {}, False),
    ("Loopback", "RandomImagesIterable", {}, False),
    (
        "Loopback",
        "FixtureRandom",
        {"data_set.size": 40, "data_set.seed": 0, "data_set.dimension_1_length": 3},
        False,
    ),
    ("ContrastiveNet", "RandomImages", {}, True),
    ("ContrastiveNet", "SurveyData", {"data_set.fields": ["image"]}, True),
    ("SeedAutoencoder", "FluxData", {}, True),
    ("ShapeNet", "LabeledVectors", {}, True),
    ("TabularNet", "CSVTable", {"data_set.fields": ["f0", "f1", "f2", "label"]}, True),
    ("BatchImageCNN", "RandomImages", {"train.data_sample": "batch"}, True),
    ("BatchAutoencoder", "RandomImages", {"train.data_sample": "batch"}, True),
    ("ImageOnlyCNN", "SurveyData", {"train.data_sample": "batch"}, True),
]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def docs_style_session(model: str, data_set: str, extra: dict, tmp_path, store) -> Hyrax:
    """A session set up the way Hyrax's documentation does it, tracked in the module's shared store."""
    h = Hyrax(overrides=store.overrides)
    h.config["model"]["name"] = model
    h.config["data_set"]["name"] = data_set
    if data_set == "CSVTable":
        h.config["data_set"]["data_location"] = str(write_csv(tmp_path / "table.csv"))
    for key, value in extra.items():
        h.set_config(key, value)
    h.set_config("train.epochs", 4)
    h.config["data_loader"]["batch_size"] = 16
    h.config["optimizer"]["lr"] = 3e-3
    return h


# One pairing per kind of model (and of data set: getters, iterable, CSV, fixture) in the fast tier;
# each trains four epochs and infers, a second or two, so the other pairings run with the slow tests.
FAST = {
    ("ImageCNN", "SurveyData"),
    ("ImageAutoencoder", "RandomImagesIterable"),
    ("Loopback", "FixtureRandom"),
    ("SeedAutoencoder", "FluxData"),
    ("TabularNet", "CSVTable"),
    ("BatchImageCNN", "RandomImages"),
}


@pytest.mark.parametrize(
    ("model", "data_set", "extra", "learns"),
    [
        pytest.param(*p, id=f"{p[0]}-{p[1]}", marks=() if p[:2] in FAST else pytest.mark.slow)
        for p in PAIRINGS
    ],
)
def test_pairing_trains_and_infers_chosen_by_name(model, data_set, extra, learns, tmp_path, store):
    h = docs_style_session(model, data_set, extra, tmp_path, store)
    trained = h.train()
    assert type(trained).__name__ == model
    assert math.isfinite(h.objective if isinstance(h.objective, float) else h.objective[0])
    [run] = store.runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags["hyrax.model"].endswith(model) and run.data.tags["hyrax.data_set"].endswith(data_set)
    losses = store.history(run.info.run_id, "train/loss")
    assert len(losses) == 4
    if learns:
        assert losses[-1] < losses[0], f"{model} on {data_set} did not learn: {losses}"
    result = h.infer()
    assert len(result) > 0 and np.all(np.isfinite(result.predictions))
    assert len(result.ids) == len(result)
    assert result[0].shape == result.predictions[0].shape


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "data_set", "args"),
    [
        ("ImageCNN", "RandomImages", []),
        ("ImageAutoencoder", "RandomImagesIterable", []),
        ("SeedAutoencoder", "FluxData", []),
        ("BatchImageCNN", "RandomImages", ["train.data_sample=batch"]),
    ],
)
def test_pairing_through_hyrax_run(model, data_set, args, hyrax_run, tmp_path):
    proc = ok(
        hyrax_run(
            f"model=hyraxlike.models.{model}",
            f"data_set=hyraxlike.data.{data_set}",
            "train.epochs=3",
            "data_loader.batch_size=16",
            "optimizer.lr=3e-3",
            *args,
        )
    )
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED", proc.stderr
    losses = metric_history(tmp_path, run.info.run_id, "train/loss")
    assert losses[-1] < losses[0]
    infer = ok(
        hyrax_run(
            f"model.name=hyraxlike.models.{model}",
            f"data_set.name=hyraxlike.data.{data_set}",
            "verb=infer",
            f"ckpt_path={run.data.tags['hyrax.run_dir']}",
            *args,
        )
    )
    assert "predictions" in infer.stdout
