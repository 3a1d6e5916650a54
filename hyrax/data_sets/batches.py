"""From a data set to model-ready batches of one split: seeded splits, NaN handling and batching.

In-memory data sets take a fast path that gathers whole batches by indexing their tensors; all
others go through a torch DataLoader with `hyrax.data_sets.items` collating and converting, so the
model receives what the contract promises (see that module).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from hyrax.data_sets import InMemoryDataset
from hyrax.data_sets.items import Converter, GetterItems, apply_nan_mode, collate_function
from hyrax.errors import HyraxError

SPLITS = ("train", "validate", "test")


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Disjoint, reproducible index sets for each split of a map-style data set of `n` items."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = {s: round(fractions.get(s, 0.0) * n) for s in SPLITS}
    if sizes["validate"] + sizes["test"] > n:
        raise HyraxError(
            f"validate and test fractions ask for more than the {n} items",
            key="train.split",
            fix="lower train.split.validate / train.split.test",
        )
    sizes["train"] = min(sizes["train"], n - sizes["validate"] - sizes["test"])
    bounds = np.cumsum([0] + [sizes[s] for s in SPLITS])
    return {s: np.sort(order[bounds[i] : bounds[i + 1]]) for i, s in enumerate(SPLITS)}


def split_of_position(position: int, fractions: dict[str, float], seed: int) -> str | None:
    """The split an iterable data set's item at `position` belongs to (a seeded hash of the position)."""
    u = ((position * 2654435761 + seed * 40503) % 2**32) / 2**32
    edge = 0.0
    for s in SPLITS:
        edge += fractions.get(s, 0.0)
        if u < edge:
            return s
    return None


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
    """Model-ready batches of one split; iterate once per epoch.

    `items` is what to read: the data set itself, or its getter view (`items.GetterItems`).
    """

    def __init__(
        self,
        items: Any,
        indices: np.ndarray | None,
        batch_size: int,
        shuffle: bool,
        seed: int,
        convert: Converter,
        *,
        num_workers: int = 0,
        iterable_split: tuple[str, dict[str, float]] | None = None,
        nan: tuple[Any, float] = (None, 0.05),
        fast: bool = False,
        collate_fn: str | None = None,
    ) -> None:
        self.batch_size, self.shuffle, self.convert, self.seed = batch_size, shuffle, convert, seed
        self.items = items
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors = None
        self.empty = (indices is not None and len(indices) == 0) or (
            iterable_split is not None
            and iterable_split[0] != "all"
            and iterable_split[1].get(iterable_split[0], 0.0) <= 0
        )
        if fast and collate_fn is None and isinstance(items, InMemoryDataset):
            index = torch.as_tensor(indices)
            x = apply_nan_mode(items.x[index], *nan)
            self.tensors = (x, None if items.y is None else items.y[index])
            self.size = len(index)
            return
        source = (
            _Positions(items, indices)
            if iterable_split is None
            else _IterableSplit(items, iterable_split[0], iterable_split[1], seed)
        )
        self.size = len(indices) if indices is not None else None
        self.loader = DataLoader(
            source,
            batch_size=batch_size,
            collate_fn=collate_function(_owner(items), collate_fn),
            shuffle=shuffle and iterable_split is None,
            generator=self.generator,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        """Batches per epoch; 0 when unknown (an iterable data set), see `empty` for emptiness."""
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
                idx = order[start : start + bs]
                yield x[idx] if y is None else (x[idx], y[idx])
        else:
            for start in range(0, n, bs):
                yield x[start : start + bs] if y is None else (x[start : start + bs], y[start : start + bs])


def _owner(items: Any) -> Any:
    """The data set whose collate methods apply (a getter view reads from its data set)."""
    return items.data_set if isinstance(items, GetterItems) else items
