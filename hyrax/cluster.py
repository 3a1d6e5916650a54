"""Cluster jobs through submitit: a job that dies is one failed result, not a failed batch; and a
launcher that may be called from several threads at once.

hydra-submitit-launcher collects a batch's results in order and raises at the first job that died
without a result (killed by the OOM killer, `scancel`, a node failure). An Optuna sweep would then
have to fail every trial of the batch, healthy ones included. A Hyrax launcher collects each job
with `job_return`, where a dead job's missing result becomes a FAILED `JobReturn` carrying the error.

The Optuna sweeper calls `launch` from several threads, one trial each. Submitting (building the
executor, writing submitit's pickles, sbatch or starting the local process) happens one thread at a
time (`submitting`); waiting for the jobs does not. On the local executor, `run_each` lends each job
its own GPUs (`hyrax.devices.DevicePool`) from its submission to its end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("hyrax")

submitting = threading.Lock()  # held while a launcher builds its executor and submits its jobs


def job_return(job: Any) -> Any:
    """The `JobReturn` of a submitit job, waiting for it; a job that produced none (it died) is a
    FAILED one carrying the error."""
    from hydra.core.utils import JobReturn, JobStatus

    try:
        return job.results()[0]
    except Exception as err:
        log.error("job %s produced no result: %s", job.job_id, (str(err).splitlines() or [repr(err)])[0])
        return JobReturn(overrides=[], status=JobStatus.FAILED, _return_value=err)


def run_each(
    count: int, per_job: int, devices: Any, submit: Callable[[int, tuple[str, ...]], Any]
) -> list[Any]:
    """Run `count` jobs, each as soon as `per_job` GPUs of `devices` (a `DevicePool`) are free:
    `submit(i, gpus)` submits job `i` (one thread at a time); the GPUs go back when the job ends.
    The jobs' `JobReturn`s, in order."""
    returns: list[Any] = [None] * count
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with devices.lent(per_job) as gpus:
                with submitting:
                    job = submit(i, gpus)
                returns[i] = job_return(job)
        except BaseException as err:
            errors.append(err)

    threads = [
        threading.Thread(target=one, args=(i,), name=f"hyrax-job-{i}", daemon=True) for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return returns


def numeric_gpus(gpus: Sequence[str]) -> list[int]:
    """GPU ids as the ints submitit's local executor takes (`visible_gpus`)."""
    from hyrax.errors import HyraxError

    if not all(g.isdigit() for g in gpus):
        raise HyraxError(
            f"submitit's local executor takes GPU indices, not {','.join(gpus)}",
            key="CUDA_VISIBLE_DEVICES",
            fix="make the GPUs visible by index (CUDA_VISIBLE_DEVICES=0,1), or use hydra/launcher=pool",
        )
    return [int(g) for g in gpus]
