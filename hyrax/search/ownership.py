"""Which sweep process a trial belongs to, when several sweep processes share one study.

Sweep workers started with the same `study_name` and `storage` (each with its own sweep dir) ask
their trials from one study. A worker restarted after a crash must fail the trials its dead run left
RUNNING, and never a trial that another, live worker is running. So each sweep records its sweep dir
on every trial it asks (`Ownership.claim`), and only that sweep declares the trial dead.

A sweep records itself a moment after asking: a trial without an owner was asked by a sweep that has
not recorded itself yet. If the trial was asked before this sweep started, or more than `GRACE_S`
seconds ago, that sweep was killed in between and whoever finds the trial cleans it up (it counts as
ours). Otherwise another live sweep is about to record itself, and the trial is not ours.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from optuna.trial import FrozenTrial, Trial, TrialState

OWNER_ATTR = "hyrax_sweep_dir"
GRACE_S = 60.0


class Ownership:
    """The claim of one sweep process (one sweep dir) on the trials of a study it may share.

    `started` is when this sweep process started (now by default). `now` arguments stand for the
    present moment (now by default); tests pass one to look at a trial from later on.
    """

    def __init__(self, sweep_dir: str | Path, started: datetime | None = None) -> None:
        self.owner = str(Path(sweep_dir).resolve())
        self.started = started or datetime.now()

    def claim(self, trial: Trial) -> None:
        """Record this sweep on a trial it has just asked."""
        trial.set_user_attr(OWNER_ATTR, self.owner)

    def owner_of(self, trial: FrozenTrial, now: datetime | None = None) -> str | None:
        """The sweep dir that asked `trial`; None while another sweep may still record itself on it.

        An ownerless trial asked before this sweep started, or more than `GRACE_S` ago, is ours.
        """
        owner = trial.user_attrs.get(OWNER_ATTR)
        if owner is not None:
            return str(owner)
        asked = trial.datetime_start
        if asked is None or asked <= self.started:
            return self.owner
        age = ((now or datetime.now()) - asked).total_seconds()
        return None if age < GRACE_S else self.owner

    def is_ours(self, trial: FrozenTrial, now: datetime | None = None) -> bool:
        """Whether `trial` belongs to this sweep."""
        return self.owner_of(trial, now) == self.owner

    def may_declare_dead(self, trial: FrozenTrial, now: datetime | None = None) -> bool:
        """Whether this sweep, as it starts, may tell a RUNNING `trial` FAIL (ours: a dead run left it)."""
        return trial.state == TrialState.RUNNING and self.is_ours(trial, now)

    def runs_elsewhere(self, trial: FrozenTrial, now: datetime | None = None) -> bool:
        """Whether `trial` is RUNNING in another sweep process (one that is, or may be, alive)."""
        return trial.state == TrialState.RUNNING and not self.is_ours(trial, now)
