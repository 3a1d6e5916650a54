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
    """The items of an iterable data set that fall in one split (with several ranks, every
    `world`-th of them starting at `rank`)."""

    def __init__(
        self, dataset: Any, split: str, fractions: dict[str, float], seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.dataset, self.split, self.fractions, self.seed = dataset, split, fractions, seed
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[Any]:
        taken = 0
        for position, item in enumerate(self.dataset):
            if self.split == "all" or split_of_position(position, self.fractions, self.seed) == self.split:
                if taken % self.world == self.rank:
                    yield position, item
                taken += 1


class Batches:
    """Model-ready batches of one split; iterate once per epoch.

    `items` is what to read: the data set itself, or its getter view (`items.GetterItems`). With
    several ranks (`shard`), each global batch of `batch_size × world` items is dealt out among
    the ranks, so an epoch gives every item of the split to exactly one rank.
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
        self.items, self.indices, self.nan = items, indices, nan
        self.num_workers, self.iterable_split, self.collate_fn = num_workers, iterable_split, collate_fn
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world, self.pin_memory = 0, 1, False
        self.tensors = None
        self.empty = (indices is not None and len(indices) == 0) or (
            iterable_split is not None
            and iterable_split[0] != "all"
            and iterable_split[1].get(iterable_split[0], 0.0) <= 0
        )
        self.size = len(indices) if indices is not None else None
        if fast and collate_fn is None and isinstance(items, InMemoryDataset):
            # The whole data set's tensors and this split's positions: no copy of the split.
            self.tensors = (items.x, items.y)
            self.index = torch.as_tensor(indices, dtype=torch.long)
            return
        self.loader = self._loader()

    def shard(self, rank: int, world: int) -> None:
        """Read only rank `rank`'s share of every global batch from now on."""
        if (rank, world) == (self.rank, self.world):
            return
        self.rank, self.world = rank, world
        if self.tensors is None:
            self.loader = self._loader()

    def place(self, device: torch.device, on_device: bool, moved: dict[int, torch.Tensor]) -> None:
        """Move an in-memory split's tensors to `device` once (`on_device`; `moved` holds what other
        splits of the same data set moved already), or pin loader batches so GPU copies do not wait."""
        if self.tensors is not None and on_device:
            self.tensors = tuple(_moved(t, device, moved) for t in self.tensors)
            self.index = self.index.to(device)
        elif self.tensors is None and device.type == "cuda":
            self.pin_memory = True
            self.loader = self._loader()

    def steps_per_rank(self) -> int | None:
        """How many batches each rank steps through per epoch (None when the size is unknown)."""
        if self.size is None:
            return None
        return math.ceil(self.size / (self.batch_size * self.world))

    def _loader(self) -> DataLoader:
        if self.iterable_split is None:
            source: Any = _Positions(self.items, self.indices)
            sampler = _RankShare(
                self.size, self.batch_size, self.rank, self.world, self.shuffle, self.generator
            )
        else:
            split, fractions = self.iterable_split
            source = _IterableSplit(self.items, split, fractions, self.seed, self.rank, self.world)
            sampler = None
        return DataLoader(
            source,
            batch_size=self.batch_size,
            collate_fn=collate_function(_owner(self.items), self.collate_fn),
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
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
        order = rank_order(self.size, self.batch_size, self.rank, self.world, self.shuffle, self.generator)
        positions = self.index[order.to(self.index.device)]
        for start in range(0, len(positions), self.batch_size):
            idx = positions[start : start + self.batch_size]
            inputs = apply_nan_mode(x[idx], *self.nan)
            yield inputs if y is None else (inputs, y[idx])


def rank_order(
    n: int, batch_size: int, rank: int, world: int, shuffle: bool, generator: torch.Generator
) -> torch.Tensor:
    """The positions (0..n-1) rank `rank` reads in one epoch: the epoch's order (shuffled by
    `generator`, the same on every rank) cut into global batches of `batch_size × world`, of which
    this rank takes every `world`-th item starting at `rank`."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world == 1:
        return order
    step = batch_size * world
    parts = [order[start + rank : start + step : world] for start in range(0, n, step)]
    return torch.cat(parts) if parts else order[:0]


class _RankShare(torch.utils.data.Sampler):
    """A DataLoader's sampler over one rank's share of a split (see `rank_order`)."""

    def __init__(
        self, n: int, batch_size: int, rank: int, world: int, shuffle: bool, generator: torch.Generator
    ) -> None:
        self.args = (n, batch_size, rank, world, shuffle, generator)

    def __iter__(self) -> Iterator[int]:
        return iter(rank_order(*self.args).tolist())

    def __len__(self) -> int:
        n, batch_size, rank, world = self.args[:4]
        return sum(
            len(range(s + rank, min(s + batch_size * world, n), world))
            for s in range(0, n, batch_size * world)
        )


def _moved(tensor: torch.Tensor | None, device: torch.device, moved: dict[int, torch.Tensor]) -> Any:
    if tensor is None:
        return None
    if id(tensor) not in moved:
        moved[id(tensor)] = tensor.to(device)
    return moved[id(tensor)]


def _owner(items: Any) -> Any:
    """The data set whose collate methods apply (a getter view reads from its data set)."""
    return items.data_set if isinstance(items, GetterItems) else items
