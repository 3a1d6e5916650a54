"""Thin adapters over hydra-submitit-launcher's launchers: see `hyrax.cluster`.

`hydra/launcher=slurm` and `hydra/launcher=local` (conf/hydra/launcher/) point at these classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher


class _DeadJobsAsFailures:
    """Collects a batch so that a job that died is one FAILED job, not an error for the whole batch."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from hyrax.cluster import dead_jobs_as_failures

        with dead_jobs_as_failures():
            return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]


class HyraxSlurmLauncher(_DeadJobsAsFailures, SlurmLauncher):
    """`submitit_slurm`, where a job that dies fails alone."""


class HyraxLocalLauncher(_DeadJobsAsFailures, LocalLauncher):
    """`submitit_local`, where a job that dies fails alone."""
