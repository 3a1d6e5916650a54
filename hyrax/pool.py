"""A pool of warm worker processes: each imports torch, MLflow and the user's package once, then runs
job after job, every job isolated from the ones before it (`hyrax.isolation`).

The pool has `n_workers` slots. A slot is one single-worker loky executor with its own GPUs
(`CUDA_VISIBLE_DEVICES`) and thread count, so a worker that dies (segfault, OOM kill, `os._exit`)
breaks only its own executor: its job fails with `WorkerDied`, the slot gets a new worker, and the
other slots' jobs go on. `run` is thread-safe: callers from several threads share the free slots
and wait for one when all are busy. `interrupt` gives running jobs a grace period to end (they get
SIGINT, as from a terminal Ctrl-C), then kills the workers; waiting `run` calls return at once.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import itertools
import logging
import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future, wait
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import loky
from loky.process_executor import BrokenProcessPool, ShutdownExecutorError

from hyrax.errors import HyraxError

log = logging.getLogger("hyrax")

# What a worker imports before its first job, so that no job pays for it.
PRELOAD = ("torch", "mlflow", "hyrax.train")
POLL_S = 0.5  # how often a waiting thread looks again (a main thread must see Ctrl-C)


class WorkerDied(RuntimeError):
    """The worker process running a job ended without a result (segfault, OOM kill, `os._exit`)."""


class JobInterrupted(RuntimeError):
    """A job stopped by Ctrl-C or by the pool being interrupted, or never started because of it."""


@dataclass(frozen=True)
class PoolSettings:
    """How many workers, and each worker's threads and GPUs (one device tuple per worker)."""

    n_workers: int
    threads_per_worker: int
    devices: list[tuple[str, ...]] = field(default_factory=list)


@dataclass
class Outcome:
    """What one call gave: its value, or the error it raised (or that stopped it)."""

    value: Any = None
    error: BaseException | None = None


def cpu_count() -> int:
    """The CPUs this process may use (affinity and cgroup quotas included), at least 1."""
    return max(1, loky.cpu_count())


def settings_for(
    n_workers: int | None, gpus_per_worker: int, gpus: Sequence[int | str] | None, threads: int | None
) -> PoolSettings:
    """Checked settings: defaults filled in, each worker given `gpus_per_worker` of the declared GPUs."""
    from hyrax.devices import declared_gpus, split_devices

    workers = cpu_count() if n_workers is None else n_workers
    for key, value, least in (("n_workers", workers, 1), ("gpus_per_worker", gpus_per_worker, 0)):
        if value < least:
            raise HyraxError(f"{value} is too few", key=f"hydra.launcher.{key}", fix=f"set {least} or more")
    if threads is not None and threads < 1:
        raise HyraxError(
            f"{threads} is too few", key="hydra.launcher.threads_per_worker", fix="set 1 or more"
        )
    declared = declared_gpus(gpus, needed=workers * gpus_per_worker)
    devices = split_devices(declared, workers, gpus_per_worker, "hydra.launcher.gpus_per_worker")
    return PoolSettings(workers, threads or max(1, cpu_count() // workers), devices)


# ---------------------------------------------------------------- inside a worker process

_job = {"running": False, "interrupted": False}


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: KeyboardInterrupt, once per job, so a second SIGINT cannot cut the job's own cleanup
    (the training loop closing its MLflow run KILLED) short. An idle worker just stops."""
    if _job["running"] and _job["interrupted"]:
        return
    _job["interrupted"] = _job["running"]
    raise KeyboardInterrupt


def _init_worker(threads: int, preload: Sequence[str]) -> None:
    """Runs once in each new worker: SIGINT handled, imports done, thread count set."""
    signal.signal(signal.SIGINT, _on_sigint)
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as err:  # the job that needs it reports the error
            log.warning("warm worker: cannot import %s: %s", name, err)
    _load_user_packages()
    torch = importlib.import_module("torch")
    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):  # tqdm's default lock is a named semaphore that a killed
        from tqdm import tqdm  # worker would leave behind (a warning at the sweep's exit)

        tqdm.set_lock(threading.RLock())
    gc.collect()
    gc.freeze()  # the imports never become garbage: no job's collection walks them again


def _load_user_packages() -> None:
    """Import the packages that register classes ($HYRAX_IMPORTS, `hyrax.plugins` entry points)."""
    from hyrax import resolve

    try:
        resolve._load_entry_points()
    except Exception as err:  # each job tries again and reports it
        resolve._entry_points_loaded = False
        log.warning("warm worker: cannot import the user's packages: %s", err)


def _run_isolated(call: bytes) -> Any:
    """One job in a worker (`call` is `fn, args` pickled): as in a fresh process, leaving nothing behind."""
    from hyrax.isolation import isolated

    fn, args = pickle.loads(call)
    signal.signal(signal.SIGINT, _on_sigint)
    _job.update(running=True, interrupted=False)
    try:
        with isolated():
            return fn(*args)
    finally:
        _job["running"] = False


# ---------------------------------------------------------------- in the launching process


class _Slot:
    """One worker: a single-worker loky executor, replaced when its worker dies."""

    def __init__(self, index: int, devices: tuple[str, ...], threads: int, preload: Sequence[str]) -> None:
        self.index, self.devices, self.threads, self.preload = index, devices, threads, preload
        self.executor: Any = None
        self.broken = False
        self.stopped = False
        self.current: Future | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """A new worker, warming up (its imports) at once."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        env = {
            "CUDA_VISIBLE_DEVICES": ",".join(self.devices),
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
        }
        self.executor = loky.ProcessPoolExecutor(
            max_workers=1, initializer=_init_worker, initargs=(self.threads, tuple(self.preload)), env=env
        )
        self.broken = False
        self.executor.submit(os.getpid)  # starts the worker now

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future:
        """Run `fn(*args)` isolated in this slot's worker (a new one if the last died)."""
        call = cloudpickle.dumps((fn, args))  # here, not in loky's feeder thread: see `WorkerPool.run`
        with self._lock:
            if self.stopped:
                raise ShutdownExecutorError("the pool is closed")
            if self.broken or self.executor is None:
                self._replace()
            try:
                self.current = self.executor.submit(_run_isolated, call)
            except (BrokenProcessPool, RuntimeError):  # it died while idle
                self._replace()
                self.current = self.executor.submit(_run_isolated, call)
            return self.current

    def renew(self) -> None:
        """A new worker in place of a dead one."""
        with self._lock:
            if self.broken and not self.stopped:
                self._replace()

    def _replace(self) -> None:
        if self.executor is not None:
            log.warning("worker %d died: starting a new one", self.index)
            self._kill()
        self._start()

    def pids(self) -> list[int]:
        """The worker's process id (none before it started, or once it is gone)."""
        processes = getattr(self.executor, "_processes", None) or {}
        return list(processes)

    def signal(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)

    def stop(self) -> list[int]:
        """Kill the worker (and what it started) for good, without waiting; the pids it had."""
        with self._lock:
            self.stopped = True
            pids = self.pids()
            self._kill()
            return pids

    def _kill(self) -> None:
        if self.executor is not None:
            with contextlib.suppress(Exception):
                self.executor.shutdown(wait=False, kill_workers=True)


class WorkerPool:
    """`n_workers` warm workers shared by callers of `run` in any number of threads."""

    def __init__(self, settings: PoolSettings, preload: Sequence[str] = PRELOAD) -> None:
        self.settings = settings
        devices = settings.devices or [()] * settings.n_workers
        self._slots = [_Slot(i, d, settings.threads_per_worker, preload) for i, d in enumerate(devices)]
        self._free = list(self._slots)
        self._changed = threading.Condition()
        self._started = False
        self.interrupted = False
        self.closed = False

    def start(self) -> None:
        """Start every worker (they warm up side by side); stopped when the interpreter exits."""
        with self._changed:
            if self._started:
                return
            self._started = True
            for slot in self._slots:
                slot.start()
        _at_exit(self.close)  # after loky's own hook, so it runs first: loky's waits for running jobs

    def run(self, calls: Iterable[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Outcome]:
        """Run each `fn(*args)` on a free worker, all at once as far as workers are free; wait for all.

        `calls` may be a generator (Hydra composing each job's config): the next call is made while
        all workers are busy, so it is ready when one frees. Each call is pickled in this thread:
        loky's feeder thread would have to share the GIL with the making of the next one.
        A KeyboardInterrupt while waiting (Ctrl-C in the main thread) interrupts the pool and is raised.
        """
        self.start()
        futures: list[Future | None] = []
        pending, ahead = iter(calls), []
        try:
            while (call := ahead.pop(0) if ahead else next(pending, None)) is not None:
                slot = self._take(block=False)
                if slot is None and not (self.interrupted or self.closed):
                    ahead.extend(itertools.islice(pending, 1))
                    slot = self._take(block=True)
                futures.append(None if slot is None else self._submit(slot, *call))
            return [self._outcome(f) for f in futures]
        except KeyboardInterrupt:
            self.interrupt()
            raise

    def _take(self, block: bool) -> _Slot | None:
        """A free slot (waiting for one if `block`); None once the pool is interrupted or closed."""
        with self._changed:
            while block and not self._free and not (self.interrupted or self.closed):
                self._changed.wait(POLL_S)
            if self.interrupted or self.closed or not self._free:
                return None
            return self._free.pop(0)

    def _submit(self, slot: _Slot, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future | None:
        try:
            future = slot.submit(fn, args)
        except ShutdownExecutorError:  # the pool was closed meanwhile
            self._give_back(slot, None)
            return None
        except BaseException:
            self._give_back(slot, None)
            raise
        future.add_done_callback(lambda f: self._give_back(slot, f))
        return future

    def _give_back(self, slot: _Slot, future: Future | None) -> None:
        """A slot's job ended (in loky's thread): free the slot; a dead worker is replaced first, in a
        thread of its own, so that the next job finds a new worker already warming up."""
        died = (
            future is not None
            and not future.cancelled()
            and isinstance(future.exception(), BrokenProcessPool)
        )
        slot.broken = slot.broken or died
        slot.current = None
        if died and not (self.interrupted or self.closed):
            threading.Thread(target=self._renew, args=(slot,), name="hyrax-pool-renew", daemon=True).start()
        else:
            self._free_slot(slot)

    def _renew(self, slot: _Slot) -> None:
        try:
            slot.renew()
        finally:  # if that failed, the next submit tries again
            self._free_slot(slot)

    def _free_slot(self, slot: _Slot) -> None:
        with self._changed:
            self._free.append(slot)
            self._free.sort(key=lambda s: s.index)
            self._changed.notify_all()

    def _outcome(self, future: Future | None) -> Outcome:
        if future is None:
            return Outcome(error=JobInterrupted("not started: the sweep was interrupted"))
        while not future.done():
            wait([future], timeout=POLL_S)
        try:
            error = future.exception()
        except CancelledError:
            return Outcome(error=JobInterrupted("cancelled: the sweep was interrupted"))
        if error is None:
            return Outcome(value=future.result())
        return Outcome(error=self._explained(error))

    def _explained(self, error: BaseException) -> BaseException:
        """The error a job gets for what stopped it (the original one as its cause)."""
        if isinstance(error, KeyboardInterrupt):
            explained: BaseException = JobInterrupted("interrupted (Ctrl-C)")
        elif isinstance(error, ShutdownExecutorError) or (
            self.interrupted and isinstance(error, BrokenProcessPool)
        ):
            explained = JobInterrupted("stopped: the sweep was interrupted and its workers killed")
        elif isinstance(error, BrokenProcessPool):
            codes = re.search(r"exit codes of the workers are \{(.*?)\}", str(error))
            how = f" (exit code {codes.group(1)})" if codes else ""
            explained = WorkerDied(
                f"the worker process running this job died{how}: a crash (segfault), the OOM killer, "
                "a signal or os._exit; a new worker runs the next job"
            )
        else:
            return error
        explained.__cause__ = error
        return explained

    @property
    def busy(self) -> list[Future]:
        """The futures of the jobs running now."""
        return [s.current for s in self._slots if s.current is not None and not s.current.done()]

    def interrupt(self, grace_s: float = 10.0) -> None:
        """Stop the sweep: running jobs get SIGINT and up to `grace_s` to end, then the workers are
        killed. `run` calls waiting for a slot return at once (their jobs as `JobInterrupted`)."""
        with self._changed:
            self.interrupted = True
            self._changed.notify_all()
        running = self.busy
        if running:
            log.warning("interrupted: giving %d running job(s) up to %g s to end", len(running), grace_s)
            for slot in self._slots:
                if slot.current is not None:
                    slot.signal(signal.SIGINT)
            wait(running, timeout=grace_s)
        self.close()

    def close(self) -> None:
        """Kill every worker (a clean exit of torch takes seconds; idle workers hold nothing) and
        what they started, and wait until they are gone."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()
        pids = [pid for slot in self._slots for pid in slot.stop()]
        _reap(pids, timeout=1.0)


def _alive(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _reap(pids: Sequence[int], timeout: float) -> None:
    """Wait until `pids` are gone (loky kills each worker's process tree); SIGKILL what is left after
    `timeout`, and wait for that too."""
    for last in (False, True):
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in [] if last else filter(_alive, pids):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _at_exit(callback: Callable[[], None]) -> None:
    """Call `callback` when the interpreter shuts down, before it waits for threads and before
    loky's own exit hook (registered earlier, run later), which would wait for running jobs."""
    try:
        threading._register_atexit(callback)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        import atexit

        atexit.register(callback)
