"""Cluster jobs through submitit: a job that dies is one failed result, not a failed batch.

hydra-submitit-launcher collects a batch's results in order and raises at the first job that died
without a result (killed by the OOM killer, `scancel`, a node failure). An Optuna sweep would then
have to fail every trial of the batch, healthy ones included. While a Hyrax launcher collects
results, a dead job's missing result becomes a FAILED `JobReturn` carrying the error instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("hyrax")


@contextlib.contextmanager
def dead_jobs_as_failures() -> Iterator[None]:
    """While active, `submitit` job results that cannot be had come back as FAILED job returns."""
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.core import Job

    original = Job.results

    def results(job: Any) -> list[Any]:
        try:
            return original(job)
        except Exception as err:
            log.error("job %s produced no result: %s", job.job_id, str(err).splitlines()[0])
            return [JobReturn(overrides=[], status=JobStatus.FAILED, _return_value=err)]

    Job.results = results  # type: ignore[method-assign]
    try:
        yield
    finally:
        Job.results = original  # type: ignore[method-assign]
