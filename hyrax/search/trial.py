"""Job-side handle on the sweep trial a job runs: report intermediate values, get pruned.

A job learns its trial without any change to the app's config or its override list: the
sweeper sets two environment variables for the job only (as `hydra.job.env_set`, which Hydra
applies around the task function and restores after it, in whatever process runs the job):

- `HYRAX_TRIAL_NUMBER`: the trial's number in its study;
- `HYRAX_TRIAL_STUDY`: the sweep's study file (`<sweep dir>/optuna_study.json`): the study's
  name, its storage and the pruner config, written once by the sweep process.

The training loop (or any Hydra app) does:

    reporter = open_trial()                        # None outside an Optuna sweep
    for epoch in range(epochs):
        ...
        if reporter is not None:
            reporter.report(val_loss, step=epoch)  # raises optuna.TrialPruned

and lets `optuna.TrialPruned` propagate out of the task function: the sweeper then records the
trial as PRUNED with its last reported value. This works from another process or machine, as
long as it reaches the same storage and the sweep dir.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("hyrax")

NUMBER_ENV = "HYRAX_TRIAL_NUMBER"
STUDY_ENV = "HYRAX_TRIAL_STUDY"
STUDY_FILE = "optuna_study.json"


def write_study_file(sweep_dir: Path, study_name: str, storage: Any, pruner: Any) -> Path:
    """Record where the sweep's study is, for its jobs; the file's path."""
    path = sweep_dir / STUDY_FILE
    path.write_text(json.dumps({"study_name": study_name, "storage": storage, "pruner": pruner}))
    return path.resolve()


def job_environment(study_file: Path, number: int) -> dict[str, str]:
    """The environment variables that tell the job of trial `number` its trial."""
    return {NUMBER_ENV: str(number), STUDY_ENV: str(study_file)}


def current_trial_number() -> int | None:
    """The number of the sweep trial this job runs, or None outside an Optuna sweep."""
    number = os.environ.get(NUMBER_ENV)
    return int(number) if number not in (None, "") and os.environ.get(STUDY_ENV) else None


class TrialReporter:
    """Reports intermediate values of one running trial and asks its pruner whether to stop."""

    def __init__(self, trial: optuna.trial.Trial) -> None:
        self._trial = trial
        self._multi_objective = len(trial.study.directions) > 1

    @property
    def number(self) -> int:
        """The trial number in its study."""
        return self._trial.number

    def report(self, value: float, step: int) -> None:
        """Record `value` at `step`; raise `optuna.TrialPruned` if the pruner says so.

        A no-op for multi-objective studies (Optuna cannot prune them).
        """
        import optuna

        if self._multi_objective:
            return
        self._trial.report(float(value), int(step))
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"Trial {self.number} pruned at step {step} (value {value}).")


def open_trial() -> TrialReporter | None:
    """The reporter for the trial this job runs, or None if the job is not a sweep trial.

    The pruner is rebuilt from the study file: pruners are not stored in Optuna storage.
    """
    number = current_trial_number()
    if number is None:
        return None
    study_info: Mapping[str, Any] = json.loads(Path(os.environ[STUDY_ENV]).read_text())
    import optuna

    from hyrax.search.builders import build_pruner
    from hyrax.search.storage import open_storage

    study = optuna.load_study(
        study_name=str(study_info["study_name"]),
        storage=open_storage(study_info["storage"]),
        sampler=optuna.samplers.RandomSampler(),
        pruner=build_pruner(study_info.get("pruner")),
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    log.debug("Opened trial %d of study %s", number, study.study_name)
    return TrialReporter(optuna.trial.Trial(study, trial_id))
