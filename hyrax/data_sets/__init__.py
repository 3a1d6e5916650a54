"""Data set contract: subclass `HyraxDataset` together with a torch `Dataset` or `IterableDataset`.

    from hyrax.data_sets import HyraxDataset
    from torch.utils.data import Dataset

    class MyData(HyraxDataset, Dataset):
        def __init__(self, config):
            ...
            super().__init__(config)            # or (config, metadata_table, "object_id")
        def __getitem__(self, i): return {"image": ..., "label": ...}
        def __len__(self): ...

Items may be tensors, `(x, y)` pairs, dicts, or dicts already shaped `{"data": {...}, "object_id": ...}`.
A data set without a usable `__getitem__` (current Hyrax style) is read through its `get_<field>(idx)`
methods. Subclasses register themselves by class name, so `data_set=MyData` works once the class is
defined. Hyrax splits the data itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MethodType
from typing import Any

import numpy as np
import torch

from hyrax import registry
from hyrax.data_sets import metadata as _metadata

ID_COLUMN = "object_id"


class HyraxDataset:
    """Base class of every Hyrax data set: keeps the config and an optional metadata table.

    As in Hyrax, each metadata column `c` also becomes a `get_c(idx)` getter unless the class
    defines one, and `ids()` reads the id column when there is one.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry.register("data_set", cls)

    def __init__(
        self, config: Any = None, metadata_table: Any = None, object_id_column_name: str | None = None
    ) -> None:
        self._config = config
        self._metadata_table = metadata_table
        self._id_column = object_id_column_name
        for col in _metadata.column_names(metadata_table):
            if not hasattr(self, f"get_{col}"):
                setattr(self, f"get_{col}", MethodType(_column_getter(col), self))

    @property
    def config(self) -> Any:
        """The run config this data set was built with (read-only for the data set's purposes)."""
        return self._config

    @config.setter
    def config(self, value: Any) -> None:
        self._config = value

    @property
    def metadata_table(self) -> Any:
        """The metadata table passed to `__init__`, or None."""
        return self._metadata_table

    @classmethod
    def is_iterable(cls) -> bool:
        """True for iterable-style data sets (`__iter__`), False for map-style ones."""
        if issubclass(cls, torch.utils.data.IterableDataset):
            return True
        return hasattr(cls, "__iter__") and not hasattr(cls, "__getitem__")

    @classmethod
    def is_map(cls) -> bool:
        """True for map-style data sets (`__getitem__`/`__len__`, or `get_<field>` getters)."""
        return not cls.is_iterable()

    def ids(self) -> Iterator[str]:
        """Ids in data set order: the metadata id column, else `get_object_id`, else each position."""
        column = self._id_column or ID_COLUMN
        if column in _metadata.column_names(self._metadata_table):
            return (str(v) for v in _metadata.column(self._metadata_table, column))
        if self.is_iterable():
            return (str(i) for i, _ in enumerate(iter(self)))  # type: ignore[call-overload]
        getter = getattr(self, "get_object_id", None)
        if callable(getter):
            return (str(getter(i)) for i in range(len(self)))  # type: ignore[arg-type]
        return (str(i) for i in range(len(self)))  # type: ignore[arg-type]

    def sample_data(self) -> Any:
        """The first item, for map-style and iterable data sets alike."""
        if self.is_iterable():
            return next(iter(self))  # type: ignore[call-overload]
        return self[0]  # type: ignore[index]

    def metadata_fields(self) -> list[str]:
        """The metadata table's column names (empty without a table)."""
        return _metadata.column_names(self._metadata_table)

    def metadata(self, idxs: Any, fields: list[str]) -> np.ndarray:
        """The given rows' metadata as a numpy record array with only `fields` as columns."""
        from hyrax.errors import HyraxError

        known = self.metadata_fields()
        columns = [f for f in fields if f in known]
        if not columns:
            raise HyraxError(
                f"none of the metadata fields {fields} exist in {type(self).__qualname__}",
                key="data_set",
                fix=f"ask for some of: {', '.join(known) or '(no metadata)'}",
            )
        return _metadata.rows(self._metadata_table, idxs, columns)


def _column_getter(col: str) -> Any:
    def getter(self: HyraxDataset, idx: int) -> Any:
        return _metadata.column(self._metadata_table, col)[idx]

    return getter


class InMemoryDataset(HyraxDataset, torch.utils.data.Dataset):
    """A data set held as tensors: Hyrax fetches whole batches by indexing, with no per-item work."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, config: Any = None) -> None:
        super().__init__(config)
        if y is not None and len(y) != len(x):
            from hyrax.errors import HyraxError

            raise HyraxError(
                f"{len(x)} inputs but {len(y)} labels",
                key="data_set",
                fix="give every input exactly one label",
            )
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Any:
        return self.x[index] if self.y is None else (self.x[index], self.y[index])

    def __getitems__(self, indices: list[int]) -> Any:
        """A whole batch at once (torch's DataLoader calls this when it exists)."""
        return self[torch.as_tensor(indices)]  # type: ignore[index]


def iterable_dataset_collate(batch: list[Any]) -> Any:
    """Hyrax's collate function for iterable data sets, kept by name for `data_loader.collate_fn`."""
    from hyrax.data_sets.items import default_collate_items

    return default_collate_items(batch)


__all__ = ["HyraxDataset", "InMemoryDataset", "iterable_dataset_collate"]
