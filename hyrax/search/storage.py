"""Where a study lives, shared by the sweep process and its jobs (possibly on other machines).

A *storage spec* is what the sweeper passes to jobs as `trial.storage`:

- a string containing `://`: an RDB URL for `optuna.storages.RDBStorage`
  (`sqlite:///relative.db` is made absolute, since jobs may run in other directories);
- any other string: a journal file (`JournalStorage(JournalFileBackend(path))`);
- a mapping with `_target_`: instantiated by Hydra (e.g. an RDBStorage with engine options).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyrax.config import plain
from hyrax.locks import SQLITE_PREFIX

StorageSpec = str | Mapping[str, Any]

JOURNAL_FILE = "optuna.journal"


def resolve_storage(storage: Any, sweep_dir: str | Path) -> StorageSpec:
    """Normalize the `storage` setting: null means a journal file in `sweep_dir`."""
    storage = plain(storage)
    if storage is None:
        return str(Path(sweep_dir, JOURNAL_FILE).absolute())
    if isinstance(storage, Mapping):
        return dict(storage)
    storage = str(storage)
    if storage.startswith(SQLITE_PREFIX) and not storage.startswith(SQLITE_PREFIX + "/"):
        path = storage[len(SQLITE_PREFIX) :]
        return storage if path.startswith(":memory:") else SQLITE_PREFIX + str(Path(path).absolute())
    if "://" in storage:
        return storage
    return str(Path(storage).absolute())


def open_storage(spec: StorageSpec) -> Any:
    """An Optuna storage (or RDB URL string) for a storage spec."""
    spec = plain(spec)
    if isinstance(spec, Mapping):
        from hydra.utils import instantiate

        return instantiate(dict(spec))
    if "://" in spec:
        from optuna.storages import RDBStorage

        from hyrax.locks import sqlite_lock

        with sqlite_lock(spec):  # a new SQLite file: only one process may create its tables
            return RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    os.makedirs(os.path.dirname(spec) or ".", exist_ok=True)
    return JournalStorage(JournalFileBackend(spec))


def describe(spec: StorageSpec) -> str:
    """Human-readable storage spec for logs."""
    spec = plain(spec)
    if isinstance(spec, Mapping):
        return str(spec.get("_target_", spec))
    return spec if "://" in spec else f"journal file {spec}"
