"""From a data set to model-ready batches: seeded splits, NaN handling, collation and `to_tensor`.

In-memory data sets take a fast path that gathers whole batches by indexing their tensors; all
others go through a torch DataLoader. Either way the model sees what the contract promises:
a tensor `x`, or an `(x, y)` pair, already converted by the model's `to_tensor` when it has one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils.collate import default_collate

from hyrax.data_sets import InMemoryDataset
from hyrax.errors import HyraxError

SPLITS = ("train", "validate", "test")
NAN_MODES = (None, "none", "zero", "quantile")
Converter = Callable[[Any], Any]


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Disjoint, reproducible index sets for each split of a map-style data set of `n` items."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = {s: int(round(fractions.get(s, 0.0) * n)) for s in SPLITS}
    if sizes["validate"] + sizes["test"] > n:
        raise HyraxError(f"validate and test fractions ask for more than the {n} items",
                         key="train.split", fix="lower train.split.validate / train.split.test")
    sizes["train"] = min(sizes["train"], n - sizes["validate"] - sizes["test"])
    bounds = np.cumsum([0] + [sizes[s] for s in SPLITS])
    return {s: np.sort(order[bounds[i]:bounds[i + 1]]) for i, s in enumerate(SPLITS)}


def split_of_position(position: int, fractions: dict[str, float], seed: int) -> Optional[str]:
    """The split an iterable data set's item at `position` belongs to (a seeded hash of the position)."""
    u = ((position * 2654435761 + seed * 40503) % 2**32) / 2**32
    edge = 0.0
    for s in SPLITS:
        edge += fractions.get(s, 0.0)
        if u < edge:
            return s
    return None


def apply_nan_mode(x: Any, mode: Optional[str]) -> Any:
    """Replace NaNs in an input batch as `data_set.nan_mode` says (null leaves them)."""
    if mode in (None, "none") or not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        return x
    if mode == "zero":
        return torch.nan_to_num(x, nan=0.0)
    if mode == "quantile":
        flat = x.reshape(len(x), -1)
        fill = torch.nanquantile(flat, 0.05, dim=1, keepdim=True).nan_to_num(0.0)
        return torch.where(torch.isnan(flat), fill, flat).reshape(x.shape)
    raise HyraxError(f"unknown nan_mode '{mode}'", key="data_set.nan_mode",
                     fix="use null, zero or quantile")


def make_converter(model_cls: type, sample_item: Any, nan_mode: Optional[str]) -> Converter:
    """The function from a collated batch to what the model sees (tensor `x` or `(x, y)`)."""
    from hyrax.models.contract import TO_TENSOR_NAMES, find_method

    to_tensor = find_method(model_cls, TO_TENSOR_NAMES)
    if isinstance(sample_item, dict) and to_tensor is None and "image" not in sample_item:
        raise HyraxError(
            f"data set items are dicts with keys {sorted(sample_item)} but no 'image' key, and "
            f"{model_cls.__qualname__} has no to_tensor", key="model",
            fix=f"define @staticmethod to_tensor(data_dict) on {model_cls.__qualname__} "
            "(or give items 'image' and 'label' keys)")

    def convert(batch: Any) -> Any:
        if to_tensor is not None:
            batch = to_tensor(batch)
        elif isinstance(batch, dict):
            batch = (batch["image"], batch["label"]) if "label" in batch else batch["image"]
        return _with_nan_mode(_as_tensors(batch), nan_mode)

    return convert


def _as_tensors(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and not isinstance(batch[0], (int, float)):
        return (_as_tensor(batch[0]), _as_tensor(batch[1]))
    return _as_tensor(batch)


def _as_tensor(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return torch.stack(list(value))
    array = np.asarray(value)
    tensor = torch.as_tensor(array)
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def _with_nan_mode(batch: Any, mode: Optional[str]) -> Any:
    if isinstance(batch, tuple):
        return (apply_nan_mode(batch[0], mode), batch[1])
    return apply_nan_mode(batch, mode)


def dict_collate(with_to_tensor: bool) -> Callable[[list[Any]], Any]:
    """Collation for (position, item) pairs; dict items become the `{"data": ..., "object_id": ...}` form."""

    def collate(pairs: list[Any]) -> Any:
        positions = [p for p, _ in pairs]
        items = [item for _, item in pairs]
        if not isinstance(items[0], dict):
            return default_collate(items)
        if not with_to_tensor:
            return default_collate([{k: item[k] for k in ("image", "label") if k in item} for item in items])
        ids = [item.get("object_id", str(p)) for p, item in zip(positions, items)]
        data = {k: [item[k] for item in items] for k in items[0]}
        data.setdefault("object_id", ids)
        return {"data": data, "object_id": ids}

    return collate


class _Positions(torch.utils.data.Dataset):
    """Map-style view of selected items that also yields each item's position."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        position = int(self.indices[i])
        return position, self.dataset[position]


class _IterableSplit(IterableDataset):
    """The items of an iterable data set that fall in one split."""

    def __init__(self, dataset: Any, split: str, fractions: dict[str, float], seed: int) -> None:
        self.dataset, self.split, self.fractions, self.seed = dataset, split, fractions, seed

    def __iter__(self) -> Iterator[Any]:
        for position, item in enumerate(self.dataset):
            if self.split == "all" or split_of_position(position, self.fractions, self.seed) == self.split:
                yield position, item


class Batches:
    """Model-ready batches of one split; iterate once per epoch."""

    def __init__(self, dataset: Any, indices: Optional[np.ndarray], batch_size: int, shuffle: bool,
                 seed: int, convert: Converter, with_to_tensor: bool, num_workers: int = 0,
                 iterable_split: Optional[tuple[str, dict[str, float]]] = None,
                 nan_mode: Optional[str] = None) -> None:
        self.batch_size, self.shuffle, self.convert = batch_size, shuffle, convert
        self.with_to_tensor = with_to_tensor
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors = None
        if isinstance(dataset, InMemoryDataset) and not with_to_tensor:
            index = torch.as_tensor(indices)
            x = apply_nan_mode(dataset.x[index], nan_mode)
            self.tensors = (x, None if dataset.y is None else dataset.y[index])
            self.size = len(index)
            return
        source = (_Positions(dataset, indices) if iterable_split is None
                  else _IterableSplit(dataset, iterable_split[0], iterable_split[1], seed))
        self.size = len(indices) if indices is not None else None
        self.loader = DataLoader(source, batch_size=batch_size, collate_fn=dict_collate(with_to_tensor),
                                 shuffle=shuffle and iterable_split is None, generator=self.generator,
                                 num_workers=num_workers, persistent_workers=num_workers > 0)

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size) if self.size is not None else 0

    def set_epoch(self, epoch: int) -> None:
        """Make this epoch's shuffle depend only on the seed and the epoch, so resumed runs match."""
        self.generator.manual_seed(self.seed * 100_003 + epoch)

    def __iter__(self) -> Iterator[Any]:
        if self.tensors is None:
            return (self.convert(batch) for batch in self.loader)
        return self._tensor_batches()

    def _tensor_batches(self) -> Iterator[Any]:
        x, y = self.tensors
        n, bs = self.size, self.batch_size
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                yield x[idx] if y is None else (x[idx], y[idx])
        else:
            for start in range(0, n, bs):
                yield x[start:start + bs] if y is None else (x[start:start + bs], y[start:start + bs])
