"""Built-in data sets: synthetic ones for trying things out, and loaders for .npy/.npz, HDF5 and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyrax.data_sets import InMemoryDataset
from hyrax.errors import HyraxError


class SyntheticClassification(InMemoryDataset):
    """Gaussian clusters, one per class: a task a small model learns within a few epochs."""

    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 20,
        n_classes: int = 4,
        noise: float = 3.0,
        seed: int = 0,
        config: Any = None,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        centers = torch.randn(n_classes, n_features, generator=g) * 2.0
        y = torch.randint(0, n_classes, (n_samples,), generator=g)
        x = centers[y] + noise * torch.randn(n_samples, n_features, generator=g)
        super().__init__(x, y, config)
        self.num_classes = n_classes


class SyntheticRegression(InMemoryDataset):
    """A noisy linear target over random features."""

    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 20,
        n_targets: int = 1,
        noise: float = 0.1,
        seed: int = 0,
        config: Any = None,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n_samples, n_features, generator=g)
        weights = torch.randn(n_features, n_targets, generator=g)
        y = x @ weights + noise * torch.randn(n_samples, n_targets, generator=g)
        super().__init__(x, y, config)


def _existing(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise HyraxError(
            f"data file '{path}' does not exist (working directory: {Path.cwd()})",
            key=key,
            fix=f"point {key} at an existing file (an absolute path is safest)",
        )
    return p


def _tensors(x: np.ndarray, y: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs as float32; labels as int64 when they are whole numbers, else float32.

    Contiguous arrays that already have those dtypes are shared with the tensors, not copied (labels
    read from a CSV file are a strided column of a record array: those are copied).
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if y is None:
        return xt, None
    y = np.asarray(y)
    integral = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
    return xt, torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64 if integral else np.float32))


def _pick(arrays: Any, key: str | None, config_key: str, path: Path) -> np.ndarray | None:
    if key is None:
        return None
    if key not in arrays:
        raise HyraxError(
            f"'{path}' has no array named '{key}' (it has: {', '.join(sorted(arrays))})",
            key=config_key,
            fix=f"set {config_key} to one of those names",
        )
    return arrays[key][()]


class NumpyDataSet(InMemoryDataset):
    """Arrays from a .npz file (keys `x_key`/`y_key`) or a .npy file of inputs only."""

    def __init__(
        self, path: str = "???", x_key: str = "x", y_key: str | None = "y", config: Any = None
    ) -> None:
        p = _existing(path, "data_set.path")
        if p.suffix == ".npy":
            x, y = np.load(p), None
        else:
            with np.load(p) as arrays:
                x = _pick(arrays, x_key, "data_set.x_key", p)
                y = _pick(arrays, y_key, "data_set.y_key", p)
        super().__init__(*_tensors(x, y), config)


class HDF5DataSet(InMemoryDataset):
    """Datasets `x_key`/`y_key` of an HDF5 file, read with h5py."""

    def __init__(
        self, path: str = "???", x_key: str = "x", y_key: str | None = "y", config: Any = None
    ) -> None:
        import h5py

        p = _existing(path, "data_set.path")
        with h5py.File(p, "r") as f:
            x = _pick(f, x_key, "data_set.x_key", p)
            y = _pick(f, y_key, "data_set.y_key", p)
        super().__init__(*_tensors(x, y), config)


class CSVDataSet(InMemoryDataset):
    """Rows of a CSV file with a header: every numeric column but `label_column` is an input."""

    def __init__(
        self,
        path: str = "???",
        label_column: str | None = "label",
        delimiter: str = ",",
        config: Any = None,
    ) -> None:
        p = _existing(path, "data_set.path")
        table = np.genfromtxt(p, delimiter=delimiter, names=True, dtype=None, encoding="utf-8")
        columns = list(table.dtype.names or ())
        if len(columns) == 1 and label_column is not None and label_column not in columns:
            raise HyraxError(
                f"'{p}' read with delimiter {delimiter!r} has a single column, '{columns[0]}'",
                key="data_set.delimiter",
                fix="set data_set.delimiter to the character that separates the file's columns",
            )
        if label_column is not None and label_column not in columns:
            raise HyraxError(
                f"'{p}' has no column '{label_column}' (columns: {', '.join(columns)})",
                key="data_set.label_column",
                fix="set data_set.label_column to one of those, or to null for unlabeled data",
            )
        inputs = [c for c in columns if c != label_column]
        x = np.stack([table[c].astype(np.float32) for c in inputs], axis=1)
        y = table[label_column] if label_column is not None else None
        if y is not None and np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)  # text loses the dtype: whole-number labels are class indices
        super().__init__(*_tensors(x, y), config)
