"""`hydra/launcher=pool`: Hydra's launcher contract over Hyrax's warm worker pool (`hyrax.pool`).

Each job's config is composed here, in the sweep process, as Hydra's basic launcher does; the job
runs in a warm worker through Hydra's `run_job` (its directory, its `.hydra/`, its callbacks), with
the sweep process's Hydra singletons, as hydra-submitit-launcher runs it. `launch` may be called
from several threads at once (one Optuna trial each); `parallel_jobs` says how many run at a time.
Hydra imports this module on every run: the pool (loky, torch) is only imported when it is used.
Hydra's plugin scan runs it outside `sys.modules`, where a dataclass cannot resolve string
annotations: hence no `from __future__ import annotations` here.
"""

import contextlib
import logging
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("hyrax")


@dataclass
class PoolLauncherConf:
    """Settings of `hydra/launcher=pool` (documented in conf/hydra/launcher/pool.yaml)."""

    _target_: str = "hydra_plugins.hyrax_plugins.hyrax_pool.PoolLauncher"
    n_workers: int | None = None  # null: one per CPU
    gpus_per_worker: int = 0
    gpus: list[str] | None = None  # null: $CUDA_VISIBLE_DEVICES, else every GPU torch sees
    threads_per_worker: int | None = None  # null: CPUs // n_workers


ConfigStore.instance().store(
    group="hydra/launcher", name="hyrax_pool", node=PoolLauncherConf, provider="hyrax"
)


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker, as the `__cause__` of that error."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def run_in_worker(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig, singletons: dict[Any, Any]
) -> JobReturn:
    """One job, inside a worker: Hydra's state of the sweep process, then Hydra's `run_job`."""
    Singleton.set_state(singletons)
    setup_globals()
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    error = ret._return_value
    if ret.status == JobStatus.FAILED and isinstance(error, BaseException):
        with contextlib.suppress(AttributeError):  # shown with the error in the sweep process
            error.hyrax_remote_traceback = "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            )
    return ret


class PoolLauncher(Launcher):
    """Runs each job in one of `n_workers` long-lived worker processes (see `hyrax.pool`)."""

    def __init__(
        self,
        n_workers: int | None = None,
        gpus_per_worker: int = 0,
        gpus: Sequence[int | str] | None = None,
        threads_per_worker: int | None = None,
    ) -> None:
        from hyrax.pool import settings_for

        if OmegaConf.is_config(gpus):
            gpus = OmegaConf.to_container(gpus)  # type: ignore[assignment]
        self.settings = settings_for(n_workers, gpus_per_worker, gpus, threads_per_worker)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.pool: Any = None
        self._composing = threading.Lock()

    @property
    def parallel_jobs(self) -> int:
        """How many jobs run at the same time: one per worker."""
        return self.settings.n_workers

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep Hydra's context and start the workers, so they warm up while the sweep gets ready."""
        from hyrax.pool import WorkerPool

        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.pool = WorkerPool(self.settings)
        self.pool.start()
        devices = "; ".join(",".join(d) for d in self.settings.devices if d)
        log.info(
            "pool: %d workers, %d threads each%s",
            self.settings.n_workers,
            self.settings.threads_per_worker,
            f", GPUs {devices}" if devices else "",
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs on free workers (waiting for one when all are busy); their returns, in order."""
        assert self.pool is not None, "call setup() first"
        calls = (self._call(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides))
        outcomes = self.pool.run(calls)  # composes job i+1 while job i runs
        return [
            self._job_return(outcome, list(overrides), initial_job_idx + i)
            for i, (outcome, overrides) in enumerate(zip(outcomes, job_overrides, strict=True))
        ]

    def interrupt(self, grace_s: float = 10.0) -> None:
        """After Ctrl-C: running jobs get up to `grace_s` to end, then the workers are killed."""
        if self.pool is not None:
            self.pool.interrupt(grace_s)

    def _call(self, overrides: list[str], idx: int) -> tuple[Any, tuple[Any, ...]]:
        """Job `idx`'s config, composed here (one thread at a time), and what runs it in a worker."""
        assert self.config is not None and self.hydra_context is not None
        with self._composing:
            setup_globals()
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(config):
                config.hydra.job.id = idx
                config.hydra.job.num = idx
            state = Singleton.get_state()
        return run_in_worker, (self.hydra_context, self.task_function, config, state)

    @staticmethod
    def _job_return(outcome: Any, overrides: list[str], idx: int) -> JobReturn:
        """The worker's JobReturn, or a FAILED one carrying what stopped the job."""
        if outcome.error is None:
            ret = outcome.value
            error = ret._return_value
            remote = getattr(error, "hyrax_remote_traceback", None)
            if remote and error.__cause__ is None:
                error.__cause__ = RemoteTraceback(remote)
            return ret
        from hyrax.pool import JobInterrupted

        level = logging.WARNING if isinstance(outcome.error, JobInterrupted) else logging.ERROR
        log.log(level, "job #%d (%s) failed: %s", idx, " ".join(filter_overrides(overrides)), outcome.error)
        return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=outcome.error)
