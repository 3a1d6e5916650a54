"""Data set contract: subclass `HyraxDataset` together with a torch `Dataset` or `IterableDataset`.

    from hyrax.data_sets import HyraxDataset
    from torch.utils.data import Dataset

    class MyData(HyraxDataset, Dataset):
        def __init__(self, config):
            super().__init__(config)
            ...
        def __getitem__(self, i): return {"image": ..., "label": ...}
        def __len__(self): ...

Items may be tensors, `(x, y)` pairs or dicts. Subclasses register themselves by class name, so
`data_set=MyData` works once the class is defined. Hyrax splits the data itself.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch

from hyrax import registry


class HyraxDataset:
    """Base class of every Hyrax data set; keeps the run config and provides default ids."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry.register("data_set", cls)

    def __init__(self, config: Any = None, metadata_table: Any = None) -> None:
        self.config = config
        self.metadata_table = metadata_table

    def ids(self) -> Iterator[str]:
        """Ids of the items in data set order; the position of each item unless a subclass knows better."""
        return (str(i) for i in range(len(self)))  # type: ignore[arg-type]


class InMemoryDataset(HyraxDataset, torch.utils.data.Dataset):
    """A data set held as tensors: Hyrax fetches whole batches by indexing, with no per-item work."""

    def __init__(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, config: Any = None) -> None:
        super().__init__(config)
        if y is not None and len(y) != len(x):
            from hyrax.errors import HyraxError

            raise HyraxError(f"{len(x)} inputs but {len(y)} labels", key="data_set",
                             fix="give every input exactly one label")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Any:
        return self.x[index] if self.y is None else (self.x[index], self.y[index])

    def __getitems__(self, indices: list[int]) -> Any:
        """A whole batch at once (torch's DataLoader calls this when it exists)."""
        return self[torch.as_tensor(indices)]  # type: ignore[index]


__all__ = ["HyraxDataset", "InMemoryDataset"]
