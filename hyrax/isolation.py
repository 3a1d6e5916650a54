"""What a warm worker process puts back after each job, so the next job starts as in a fresh process.

`isolated()` snapshots the process state a job can change and a later job could observe, reseeds
the global random generators from OS entropy (as a new process does), and restores the snapshot when
the job ends, however it ends:

- the working directory, `os.environ`, `sys.path`, the warnings filters;
- Hyrax's class registries (`hyrax.registry`): a class registered by one job is unknown to the next.
  A module first imported by the job that registered classes is forgotten too (dropped from
  `sys.modules`), so a later job importing it runs it again and registers its classes, as a new
  process would;
- logging: every logger's handlers, level, propagation and disabled flag (handlers a job added are
  closed), `logging.disable`, the log record factory;
- torch: its thread count, deterministic-algorithms mode, default dtype and cuDNN flags;
- an MLflow run a job left active through `mlflow.start_run` is ended; stdout and stderr are flushed.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from hyrax import registry

log = logging.getLogger("hyrax")


@dataclass
class _LoggerState:
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool


@dataclass
class Snapshot:
    """The process state one job may change, as it was before the job."""

    cwd: str
    environ: dict[str, str]
    sys_path: list[str]
    warning_filters: list[Any]
    modules: set[str]
    registries: dict[str, dict[str, type]]
    entry_points_loaded: bool | None
    loggers: dict[str, _LoggerState]
    logging_disable: int
    record_factory: Any
    torch_state: dict[str, Any] = field(default_factory=dict)


def snapshot() -> Snapshot:
    """The current process state that `restore` puts back."""
    return Snapshot(
        cwd=os.getcwd(),
        environ=dict(os.environ),
        sys_path=list(sys.path),
        warning_filters=list(warnings.filters),
        modules=set(sys.modules),
        registries={group: dict(table) for group, table in registry._BY_GROUP.items()},
        entry_points_loaded=_entry_points_flag(),
        loggers={name: _logger_state(logger) for name, logger in _loggers().items()},
        logging_disable=logging.root.manager.disable,
        record_factory=logging.getLogRecordFactory(),
        torch_state=_torch_state(),
    )


def restore(before: Snapshot) -> None:
    """Put back what `snapshot` saw; each part is restored even when another fails."""
    for step in (_end_mlflow_runs, _restore_cwd, _restore_environ, _restore_registries, _restore_logging):
        try:
            step(before)
        except Exception:
            log.exception("a warm worker could not restore its state (%s)", step.__name__)
    for stream in (sys.stdout, sys.stderr):  # what a job printed is out, as at a process's exit
        with suppress(Exception):
            stream.flush()
    sys.path[:] = before.sys_path
    warnings.filters[:] = before.warning_filters
    _restore_torch(before.torch_state)


def reseed() -> None:
    """Seed `random`, NumPy's and torch's global generators from OS entropy, as a new process does."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


@contextmanager
def isolated() -> Iterator[None]:
    """Run the block as a fresh process would, and leave no trace of it for the next block."""
    before = snapshot()
    reseed()
    try:
        yield
    finally:
        restore(before)


def _restore_cwd(before: Snapshot) -> None:
    os.chdir(before.cwd)


def _restore_environ(before: Snapshot) -> None:
    for key in [k for k in os.environ if k not in before.environ]:
        del os.environ[key]
    for key, value in before.environ.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _entry_points_flag() -> bool | None:
    resolve = sys.modules.get("hyrax.resolve")
    return None if resolve is None else resolve._entry_points_loaded


def _restore_registries(before: Snapshot) -> None:
    """Registries as before; a module the job imported that registered classes is forgotten."""
    for group, table in registry._BY_GROUP.items():
        added = {
            cls.__module__ for name, cls in table.items() if before.registries[group].get(name) is not cls
        }
        for module in added - before.modules - {"__main__", "__mp_main__"}:
            sys.modules.pop(module, None)
        table.clear()
        table.update(before.registries[group])
    resolve = sys.modules.get("hyrax.resolve")
    if resolve is not None:
        resolve._entry_points_loaded = bool(before.entry_points_loaded)


def _loggers() -> dict[str, logging.Logger]:
    found = {"": logging.root}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            found[name] = logger
    return found


def _logger_state(logger: logging.Logger) -> _LoggerState:
    return _LoggerState(list(logger.handlers), logger.level, logger.propagate, logger.disabled)


def _restore_logging(before: Snapshot) -> None:
    """Every logger as before (loggers the job created as new ones are); the job's handlers closed."""
    kept = {id(h) for state in before.loggers.values() for h in state.handlers}
    fresh = _LoggerState([], logging.NOTSET, True, False)
    for name, logger in _loggers().items():
        for handler in logger.handlers:
            if id(handler) not in kept:
                with suppress(Exception):
                    handler.close()
        state = before.loggers.get(name, fresh)
        if logger.handlers != state.handlers:
            logger.handlers[:] = state.handlers
        if logger.level != state.level:  # setLevel clears every logger's cache: only when needed
            logger.setLevel(state.level)
        logger.propagate, logger.disabled = state.propagate, state.disabled
    logging.disable(before.logging_disable)
    logging.setLogRecordFactory(before.record_factory)


def _end_mlflow_runs(before: Snapshot) -> None:
    mlflow = sys.modules.get("mlflow")
    while mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run()


def _torch_state() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "dtype": torch.get_default_dtype(),
        "cudnn": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
    }


def _restore_torch(state: dict[str, Any]) -> None:
    """torch's settings as before; each only when changed (the first `use_deterministic_algorithms`
    call imports for seconds)."""
    torch = sys.modules.get("torch")
    if torch is None or not state:
        return
    now = _torch_state()
    if now["threads"] != state["threads"]:
        torch.set_num_threads(state["threads"])
    if (now["deterministic"], now["warn_only"]) != (state["deterministic"], state["warn_only"]):
        torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["warn_only"])
    if now["dtype"] != state["dtype"]:
        torch.set_default_dtype(state["dtype"])
    if now["cudnn"] != state["cudnn"]:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = state["cudnn"]
