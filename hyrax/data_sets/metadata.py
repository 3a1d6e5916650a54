"""Reading a data set's metadata table, whatever kind of table the data set author passed.

Hyrax documents an astropy `Table`; pandas DataFrames, numpy record arrays and dicts of columns are
read the same way, so `metadata_fields()`, `metadata(idxs, fields)` and id columns work for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def column_names(table: Any) -> list[str]:
    """The column names of a metadata table (astropy, pandas, numpy record array or dict)."""
    if table is None:
        return []
    if hasattr(table, "colnames"):  # astropy Table
        return list(table.colnames)
    if hasattr(table, "columns") and not isinstance(table, np.ndarray):  # pandas DataFrame
        return [str(c) for c in table.columns]
    if isinstance(table, np.ndarray) and table.dtype.names:
        return list(table.dtype.names)
    if isinstance(table, dict):
        return [str(k) for k in table]
    raise TypeError(f"cannot read columns of a {type(table).__name__} metadata table")


def column(table: Any, name: str) -> np.ndarray:
    """One column of a metadata table as a numpy array."""
    values = table[name]
    if hasattr(values, "to_numpy"):
        return values.to_numpy()
    return np.asarray(values)


def rows(table: Any, idxs: Sequence[int] | np.ndarray, fields: list[str]) -> np.ndarray:
    """The given rows and fields as a numpy record array; masked values become NaN."""
    picked = []
    for field in fields:
        values = column(table, field)[np.asarray(idxs)]
        if np.ma.isMaskedArray(values):
            values = np.ma.filled(values.astype(float), np.nan)
        picked.append(values)
    return np.rec.fromarrays(picked, names=fields)
