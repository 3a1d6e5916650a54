"""A lock beside an SQLite database, so that processes creating its schema at once take turns.

MLflow and Optuna both create or migrate an SQLite store's tables when they first open it; two
processes doing that at the same moment (jobs or sweep workers started together) corrupt it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


@contextlib.contextmanager
def sqlite_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on `<database>.lock` while the block runs (nothing for other URIs)."""
    path = uri[len(SQLITE_PREFIX) :] if uri.startswith(SQLITE_PREFIX) else ""
    if not path or path == ":memory:":
        yield
        return
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
