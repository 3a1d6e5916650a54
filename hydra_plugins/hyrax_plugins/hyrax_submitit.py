"""Thin adapters over hydra-submitit-launcher's launchers: see `hyrax.cluster`.

`hydra/launcher=slurm` and `hydra/launcher=local` (conf/hydra/launcher/) point at these classes.
`launch` may be called from several threads at once (one Optuna trial each): submitting is one
thread at a time, waiting is not, and a job that dies is one FAILED job. On the local executor each
job with `gpus_per_node` > 0 gets GPUs of its own (from the sweep process's CUDA_VISIBLE_DEVICES,
else every GPU torch sees) until it ends; a job waits for free ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher, log

_EXECUTOR_INIT_KEYS = {"max_num_timeout"}  # what submitit takes when the executor is built


class _HyraxSubmitit:
    """Thread-safe `launch`, with each job's result collected on its own."""

    parallel_jobs = None  # no limit of ours: the cluster (or the machine) decides
    _EXECUTOR: str
    params: dict[str, Any]
    config: Any

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from hyrax.cluster import job_return, submitting

        assert self.config is not None and len(job_overrides) > 0
        with submitting:
            jobs = self._submit(job_overrides, initial_job_idx)
        return [job_return(job) for job in jobs]

    def _submit(self, job_overrides: Sequence[Sequence[str]], first: int, **local: Any) -> list[Any]:
        """Build an executor as hydra-submitit-launcher does and submit the jobs as one array."""
        import submitit

        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in _EXECUTOR_INIT_KEYS},
        )
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in generic else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in _EXECUTOR_INIT_KEYS | {"submitit_folder"}
            }
        )
        if local:  # e.g. visible_gpus, which AutoExecutor does not pass on
            executor._executor.update_parameters(**local)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        arguments = []
        for idx, overrides in enumerate(job_overrides, start=first):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            arguments.append(
                (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            )
        return executor.map_array(self, *zip(*arguments, strict=True))


class HyraxSlurmLauncher(_HyraxSubmitit, SlurmLauncher):
    """`submitit_slurm`, where a job that dies fails alone."""


class HyraxLocalLauncher(_HyraxSubmitit, LocalLauncher):
    """`submitit_local`, where a job that dies fails alone and concurrent jobs never share a GPU."""

    _devices_lock = threading.Lock()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        per_job = int(self.params.get("gpus_per_node") or 0)
        if per_job == 0:  # submitit hides every GPU (CUDA_VISIBLE_DEVICES="")
            return super().launch(job_overrides, initial_job_idx)
        from hyrax.cluster import numeric_gpus, run_each

        def submit(i: int, gpus: tuple[str, ...]) -> Any:
            [job] = self._submit([job_overrides[i]], initial_job_idx + i, visible_gpus=numeric_gpus(gpus))
            return job

        return run_each(len(job_overrides), per_job, self._device_pool(per_job), submit)

    def __getstate__(self) -> dict[str, Any]:
        """What a job gets (submitit pickles the launcher): not the GPU pool, which stays here."""
        return {k: v for k, v in self.__dict__.items() if k != "_devices"}

    def _device_pool(self, per_job: int) -> Any:
        """The GPUs this launcher lends its jobs (one pool per launcher, made on first use)."""
        from hyrax.devices import DevicePool, declared_gpus

        with self._devices_lock:
            pool = self.__dict__.get("_devices")
            if pool is None:
                pool = self.__dict__["_devices"] = DevicePool(declared_gpus(None, needed=per_job))
            return pool
