"""How a sweep keeps its trials running on a Hydra launcher: one trial per `launch` call.

Three ways, picked by what the launcher can do (`runner_for`):

- `ThreadedRunner`: launchers that run jobs concurrently and may be called from several threads
  (they say so with a `parallel_jobs` attribute: an int, or None for no limit; our `pool`, `local`
  and `slurm` launchers). Each trial is one `launch` call in a thread of its own, so a free slot is
  refilled the moment its trial ends: the sweep never waits for the slowest of a batch.
- `InlineRunner`: Hydra's basic launcher runs jobs in this process, one after the other; each trial
  is launched in the main thread (its code may install signal handlers) once the previous one ended.
- `BatchRunner`: other launchers (joblib, ray, ...) are not known to be thread-safe; they get up to
  `n_jobs` trials as one batch, as the official hydra-optuna-sweeper does.

A launcher error fails the trials it launched, not the sweep.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

log = logging.getLogger("hyrax")


@dataclass
class Finished:
    """A trial's job that ended: its trial number, Hydra's job return and its wall time."""

    number: int
    job_return: JobReturn
    seconds: float


def launch_jobs(launcher: Any, batch: Sequence[tuple[int, list[str]]]) -> list[JobReturn]:
    """Launch `(trial number, overrides)` jobs as one `launch` call; a launcher error fails them all."""
    overrides = [o for _, o in batch]
    try:
        returns = list(launcher.launch(overrides, initial_job_idx=batch[0][0]))
    except Exception as err:
        log.error("The launcher failed for trials %s: %r", [n for n, _ in batch], err)
        return [JobReturn(overrides=o, status=JobStatus.FAILED, _return_value=err) for o in overrides]
    if len(returns) != len(batch):
        raise RuntimeError(f"The launcher returned {len(returns)} results for {len(batch)} jobs.")
    return returns


class InlineRunner:
    """Runs each trial to its end when it starts, in the calling thread."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.capacity = 1
        self.done: list[Finished] = []

    def start(self, number: int, overrides: list[str]) -> None:
        """Run trial `number` now."""
        began = time.monotonic()
        [job_return] = launch_jobs(self.launcher, [(number, overrides)])
        self.done.append(Finished(number, job_return, time.monotonic() - began))

    def wait(self) -> list[Finished]:
        """The trials that ended since the last call."""
        done, self.done = self.done, []
        return done

    def interrupt(self) -> None:
        """Nothing runs in the background."""


class BatchRunner:
    """Collects up to `capacity` trials and launches them together when asked to wait."""

    def __init__(self, launcher: Any, capacity: int) -> None:
        self.launcher = launcher
        self.capacity = capacity
        self.batch: list[tuple[int, list[str]]] = []

    def start(self, number: int, overrides: list[str]) -> None:
        """Add trial `number` to the next batch."""
        self.batch.append((number, overrides))

    def wait(self) -> list[Finished]:
        """Launch the batch and wait for all of it; each trial's time is the batch's."""
        batch, self.batch = self.batch, []
        if not batch:
            return []
        began = time.monotonic()
        returns = launch_jobs(self.launcher, batch)
        seconds = time.monotonic() - began
        return [Finished(n, r, seconds) for (n, _), r in zip(batch, returns, strict=True)]

    def interrupt(self) -> None:
        """A batch runs in the calling thread: nothing to stop here."""


class ThreadedRunner:
    """Launches each trial in a daemon thread of its own; `wait` returns as soon as one ends."""

    def __init__(self, launcher: Any, capacity: int) -> None:
        self.launcher = launcher
        self.capacity = capacity
        self.ended: queue.Queue[Finished | BaseException] = queue.Queue()

    def start(self, number: int, overrides: list[str]) -> None:
        """Launch trial `number` now, in the background."""
        began = time.monotonic()

        def run() -> None:
            try:
                [job_return] = launch_jobs(self.launcher, [(number, overrides)])
                self.ended.put(Finished(number, job_return, time.monotonic() - began))
            except BaseException as err:  # a broken launcher: the sweep process must hear of it
                self.ended.put(err)

        threading.Thread(target=run, name=f"hyrax-trial-{number}", daemon=True).start()

    def wait(self) -> list[Finished]:
        """Block until at least one trial ended; all trials that ended by then."""
        ended = [self.ended.get()]
        while not self.ended.empty():
            ended.append(self.ended.get_nowait())
        for item in ended:
            if isinstance(item, BaseException):
                raise item
        return ended  # type: ignore[return-value]

    def interrupt(self) -> None:
        """Ctrl-C: let the launcher stop its jobs (the pool kills its workers after a grace period)."""
        stop = getattr(self.launcher, "interrupt", None)
        if callable(stop):
            stop()


Runner = InlineRunner | BatchRunner | ThreadedRunner


def runner_for(launcher: Any, n_jobs: int) -> Runner:
    """The way to run `n_jobs` trials at a time on `launcher` (see the module docstring)."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    if n_jobs == 1 or isinstance(launcher, BasicLauncher):
        return InlineRunner(launcher)
    if hasattr(launcher, "parallel_jobs"):
        limit = launcher.parallel_jobs
        return ThreadedRunner(launcher, n_jobs if limit is None else max(1, min(n_jobs, int(limit))))
    return BatchRunner(launcher, n_jobs)
