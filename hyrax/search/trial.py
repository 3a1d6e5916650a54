"""Job-side handle on the sweep trial a job runs: report intermediate values, get pruned.

The sweeper passes each job its trial identity as overrides of the `trial` config section
(`trial.study_name`, `trial.storage`, `trial.number`, `trial.pruner`). The training
loop does:

    reporter = open_trial(cfg.get("trial"))        # None outside an Optuna sweep
    for epoch in range(epochs):
        ...
        if reporter is not None:
            reporter.report(val_loss, step=epoch)  # raises optuna.TrialPruned

and lets `optuna.TrialPruned` propagate out of the task function: the sweeper then
records the trial as PRUNED with its last reported value. This works from another
process or machine, as long as it reaches the same storage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("hyrax")


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


def open_trial(trial_cfg: Mapping[str, Any] | None) -> TrialReporter | None:
    """The reporter for the trial a sweep job runs, or None if the job is not a sweep trial.

    `trial_cfg` is the job's `trial` config section, set by the sweeper. The pruner is
    rebuilt from `trial.pruner`: pruners are not stored in Optuna storage.
    """
    if not trial_cfg or any(trial_cfg.get(key) is None for key in ("study_name", "storage", "number")):
        return None
    import optuna

    from hyrax.search.builders import build_pruner
    from hyrax.search.storage import open_storage

    study = optuna.load_study(
        study_name=str(trial_cfg["study_name"]),
        storage=open_storage(trial_cfg["storage"]),
        sampler=optuna.samplers.RandomSampler(),
        pruner=build_pruner(trial_cfg.get("pruner")),
    )
    number = int(trial_cfg["number"])
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    log.debug("Opened trial %d of study %s", number, study.study_name)
    return TrialReporter(optuna.trial.Trial(study, trial_id))
