"""The data side of a run: the data set, its splits as model-ready batches, and the model's data sample."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hyrax.data_sets.batches import SPLITS, Batches, split_indices
from hyrax.data_sets.items import GetterItems, make_converter, strip_batch_axis, uses_getters
from hyrax.errors import HyraxError

log = logging.getLogger("hyrax")
SIZE_KEYS = {s: f"{s}_size" for s in SPLITS}  # Hyrax's data_set.train_size / validate_size / test_size


@dataclass
class DataParts:
    """The data side of a run: the data set, its splits as batches, and samples of what the model gets."""

    data_set: Any
    batches: dict[str, Batches]
    sample: Any  # what the model's constructor receives as `data_sample`
    sample_batch: Any  # a few items as one model-ready batch (the pre-training check runs on it)
    split_sizes: dict[str, int]
    items: Any  # what batches read items from: the data set, or its getter view


def split_fractions(config: Mapping[str, Any], n: int | None) -> dict[str, float]:
    """The split fractions: `train.split`, or Hyrax's `data_set.*_size` (fractions or counts) when given.

    As in Hyrax, a size that is not given is what the given ones leave over (validate: none).
    """
    node = config["data_set"] or {}
    given = {s: node.get(k) for s, k in SIZE_KEYS.items() if node.get(k) not in (None, False)}
    if not given:
        return dict(config["train"]["split"])
    if any(isinstance(v, int) and not isinstance(v, bool) for v in given.values()) and n is None:
        raise HyraxError(
            "split sizes given as counts need a data set of known length",
            key="data_set.train_size",
            fix="give the sizes as fractions (0.8) instead",
        )
    fractions = {
        s: (v / n if isinstance(v, int) and not isinstance(v, bool) else float(v)) for s, v in given.items()
    }
    fractions.setdefault("validate", 0.0)
    if "test" not in fractions:
        fractions["test"] = max(0.0, 1.0 - fractions.get("train", 0.25) - fractions["validate"])
    fractions.setdefault("train", max(0.0, 1.0 - fractions["test"] - fractions["validate"]))
    if round(sum(fractions.values()), 5) > 1.0:
        raise HyraxError(
            f"the split sizes add up to more than the whole data set: {fractions}",
            key="data_set.train_size",
            fix="lower data_set.train_size/validate_size/test_size",
        )
    return fractions


def split_seed(config: Mapping[str, Any], data_set: Any) -> int:
    """The split's seed: `train.seed`, or Hyrax's `data_set.seed` when the data set's class has no `seed`
    parameter of its own (as in Hyrax, where that key seeds the split)."""
    seed = (config["data_set"] or {}).get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and "seed" not in _parameters(type(data_set)):
        return seed
    return config["train"]["seed"]


def _parameters(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def prepare_data(
    config: Mapping[str, Any], data_set: Any, model_cls: type, reads: set[str] | None = None
) -> DataParts:
    """Split the data set and make model-ready batches for every split, plus the model's data sample.

    `reads` (see `hyrax.reads`) learns that `data_set.seed` was used when it seeds the split.
    """
    train, node = config["train"], config["data_set"] or {}
    iterable = isinstance(data_set, torch.utils.data.IterableDataset)
    items = (
        GetterItems(data_set, node.get("fields"), node.get("primary_id_field"))
        if uses_getters(data_set, node.get("fields"))
        else data_set
    )
    first = next(iter(items)) if iterable else items[0]
    nan = nan_settings(config)
    convert = make_converter(model_cls, first, *nan)
    fractions = split_fractions(config, None if iterable else len(items))
    seed = split_seed(config, data_set)
    if reads is not None and seed != config["train"]["seed"]:
        reads.add("data_set.seed")
    indices = dict.fromkeys(SPLITS) if iterable else split_indices(len(items), fractions, seed)
    loader = config.get("data_loader") or {}
    batch_size, shuffle = train["batch_size"], loader.get("shuffle", True)
    fast = batched_by_indexing(model_cls)

    def batches(split: str | None, idx: Any, size: int, workers: int = 0) -> Batches:
        return Batches(
            items,
            idx,
            size,
            shuffle and split == "train",
            seed,
            convert,
            num_workers=workers,
            iterable_split=(split, fractions) if iterable else None,
            nan=nan,
            fast=fast,
            collate_fn=loader.get("collate_fn"),
        )

    made = {
        s: batches(s, idx, batch_size, train["num_workers"] if s == "train" else 0)
        for s, idx in indices.items()
    }
    sizes = {s: (len(i) if i is not None else -1) for s, i in indices.items()}
    if made["train"].empty:
        raise HyraxError(
            "the train split is empty",
            key="train.split.train",
            fix="raise train.split.train or use a larger data set",
        )
    sample_batch = next(iter(batches("train", _head(indices["train"], 8), 8)), None)
    if sample_batch is None:
        raise HyraxError(
            "the train split gave no items",
            key="train.split.train",
            fix="check that the data set yields items, or raise train.split.train",
        )
    one = next(iter(batches("train", _head(indices["train"], 1), 1)))
    sample = one if train.get("data_sample", "item") == "batch" else strip_batch_axis(one)
    return DataParts(data_set, made, sample, sample_batch, sizes, items)


def nan_settings(config: Mapping[str, Any]) -> tuple[Any, float]:
    """`data_set.nan_mode` and `data_set.nan_quantile`, as `apply_nan_mode` takes them."""
    node = config["data_set"] or {}
    return node.get("nan_mode"), node.get("nan_quantile", 0.05)


def _head(indices: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if indices is None else indices[:n]


def batched_by_indexing(model_cls: type) -> bool:
    """In-memory data sets may skip per-item work only when the model does not pack items itself."""
    from hyrax.models.contract import TO_TENSOR_NAMES, find_method

    return find_method(model_cls, TO_TENSOR_NAMES) is None


def all_items(config: Mapping[str, Any], data: DataParts) -> Batches:
    """Every item of the data set in order, batched as the train split is (for `infer`)."""
    train = data.batches["train"]
    nan = nan_settings(config)
    collate_fn = (config.get("data_loader") or {}).get("collate_fn")
    if isinstance(data.data_set, torch.utils.data.IterableDataset):
        return Batches(
            data.items,
            None,
            config["train"]["batch_size"],
            False,
            0,
            train.convert,
            iterable_split=("all", {}),
            nan=nan,
            collate_fn=collate_fn,
        )
    return Batches(
        data.items,
        np.arange(len(data.items)),
        config["train"]["batch_size"],
        False,
        0,
        train.convert,
        nan=nan,
        fast=train.tensors is not None,
        collate_fn=collate_fn,
    )
