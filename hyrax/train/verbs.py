"""The verbs besides training: `test` a checkpoint, `infer` predictions, `prepare` a data set,
`export` a checkpoint's model (the work is in `hyrax.train.export`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyrax.errors import HyraxError
from hyrax.models.contract import TEST_NAMES
from hyrax.resolve import locate_target
from hyrax.train import checkpoint
from hyrax.train.components import assemble, build_data_set, model_class, pick_device, seed_everything
from hyrax.train.data import all_items, prepare_data
from hyrax.train.evaluate import evaluate, predict

log = logging.getLogger("hyrax")


class InferenceResult:
    """Predictions of `infer`, indexable like a sequence (`result[i]`, `len(result)`), with their ids.

    `predictions` and `ids` are numpy arrays; `path` is the `predictions.npy` written beside `ids.npy`.
    """

    def __init__(self, predictions: np.ndarray, ids: np.ndarray, path: Path) -> None:
        self.predictions, self.ids, self.path = predictions, ids, path

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index: Any) -> Any:
        return self.predictions[index]

    def __iter__(self) -> Any:
        return iter(self.predictions)

    def by_id(self, object_id: str) -> np.ndarray:
        """The prediction for one item, by its id."""
        where = np.flatnonzero(self.ids == str(object_id))
        if len(where) == 0:
            raise KeyError(object_id)
        return self.predictions[where[0]]

    def __repr__(self) -> str:
        return (
            f"InferenceResult({len(self)} predictions shaped {self.predictions.shape[1:]}, path={self.path})"
        )


def trained_model(config: Mapping[str, Any], ckpt_path: str | None) -> tuple[Any, Any, torch.device]:
    """Data and model with the weights of the named checkpoint, which must match the configured model."""
    if not ckpt_path:
        raise HyraxError(
            "no checkpoint named: Hyrax never guesses which weights to use",
            key="ckpt_path",
            fix="add ckpt_path=runs/<run dir> (uses its best checkpoint) or ckpt_path=<file>.pt",
        )
    source = checkpoint.find(ckpt_path)
    state = checkpoint.load(source)
    trained_target = state.get("config", {}).get("model", {}).get("_target_")
    wanted = config["model"]["_target_"]
    if trained_target and locate_target("model", trained_target) is not locate_target("model", wanted):
        raise HyraxError(
            f"checkpoint {source} holds a {trained_target}, but the config asks for {wanted}",
            key="model",
            fix=f"run with model={trained_target} or another checkpoint",
        )
    epochs = state["loop"]["epoch"]
    print(f"Using checkpoint {source.resolve()} (trained {epochs} epoch{'s' if epochs != 1 else ''})")
    device = pick_device(config["train"]["device"])
    seed_everything(config["train"]["seed"], False)
    data, model = assemble(config, device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise HyraxError(
            f"checkpoint {source} does not fit the configured model: {str(err).splitlines()[0]}",
            key="model",
            fix="use the model settings the checkpoint was trained with",
        ) from err
    return data, model, device


def test(config: Mapping[str, Any], run_dir: Path) -> dict[str, float]:
    """Metrics of a checkpoint on the test split."""
    data, model, device = trained_model(config, config.get("ckpt_path"))
    metrics = {f"test/{k}": v for k, v in evaluate(model, data.batches["test"], device, TEST_NAMES).items()}
    print("  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def infer(config: Mapping[str, Any], run_dir: Path) -> InferenceResult:
    """Predictions of a checkpoint for every item of the data set, saved with their ids as .npy files."""
    data, model, device = trained_model(config, config.get("ckpt_path"))
    outputs = predict(model, all_items(config, data), device)
    ids = (
        np.asarray([str(i) for i in data.data_set.ids()])
        if hasattr(data.data_set, "ids")
        else np.asarray([str(i) for i in range(len(outputs))])
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    np.save(run_dir / "predictions.npy", outputs)
    np.save(run_dir / "ids.npy", ids)
    print(f"Wrote {len(outputs)} predictions to {run_dir.resolve() / 'predictions.npy'} (ids in ids.npy)")
    return InferenceResult(outputs, ids, run_dir / "predictions.npy")


def export(config: Mapping[str, Any], run_dir: Path) -> Any:
    """A checkpoint's model as an ONNX file, checked against torch; returns an `ExportResult`."""
    from hyrax.train.export import export_model, export_settings, require_onnx

    settings = export_settings(config)  # a bad setting or missing package: before any weights load
    require_onnx()
    data, model, _ = trained_model(config, config.get("ckpt_path"))
    result = export_model(model, data.sample_batch, settings, checkpoint.find(config["ckpt_path"]))
    print(result.summary())
    return result


def prepare(config: Mapping[str, Any], run_dir: Path) -> Any:
    """Build the data set and describe it: length, one item's structure and the split sizes."""
    data_set = build_data_set(config)
    data = prepare_data(config, data_set, model_class(config))
    length = len(data_set) if hasattr(data_set, "__len__") else "unknown (iterable)"
    first = (
        next(iter(data.items)) if isinstance(data_set, torch.utils.data.IterableDataset) else data.items[0]
    )
    print(f"Data set {type(data_set).__qualname__}: {length} items")
    print(f"One item: {describe(first)}")
    print("Splits: " + ", ".join(f"{k}={v if v >= 0 else 'streamed'}" for k, v in data.split_sizes.items()))
    print(f"Model data_sample: {describe(data.sample)}")
    return data_set


def describe(item: Any) -> str:
    """A short structural description of an item: types, shapes and dtypes."""
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return f"{type(item).__name__}{tuple(item.shape)} {item.dtype}"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in item.items()) + "}"
    if isinstance(item, (tuple, list)):
        return f"{type(item).__name__}(" + ", ".join(describe(v) for v in item) + ")"
    return type(item).__name__
