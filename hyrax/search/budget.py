"""When a sweep stops asking for trials: `timeout`, `stop_when.value`, `stop_when.patience`.

Trials already running when a budget runs out finish and are told as usual; no new one starts.
The reason is kept for the sweep's results (and its MLflow parent run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial, TrialState


class Budget:
    """The stop conditions of one sweep process, fed every trial it tells.

    `timeout` is in seconds from `start` (now by default); `value` is an objective the sweep stops
    at once reached (single objective); `patience` is the number of finished trials in a row that
    did not improve the best objective.
    """

    def __init__(
        self,
        timeout: float | None,
        stop_when: Mapping[str, Any] | None,
        direction: str,
        start: float | None = None,
    ) -> None:
        stop_when = stop_when or {}
        self.timeout = timeout
        self.value = stop_when.get("value")
        self.patience = stop_when.get("patience")
        self.maximize = direction == "maximize"
        self.start = time.monotonic() if start is None else start
        self.best = -math.inf if self.maximize else math.inf
        self.since_best = 0
        self.reached: str | None = None

    def seed_best(self, trials: list[FrozenTrial]) -> None:
        """Start from the best objective a resumed or shared study already has."""
        for trial in trials:
            if trial.state == TrialState.COMPLETE and trial.values and len(trial.values) == 1:
                self._improves(trial.values[0])
        if (
            self.value is not None
            and math.isfinite(self.best)
            and self._at_least(self.best, float(self.value))
        ):
            self.reached = f"the study's best objective {self.best:g} reached stop_when.value={self.value}"

    def told(self, trial: FrozenTrial) -> None:
        """Count a finished trial of this sweep towards `value` and `patience`."""
        value = trial.values[0] if trial.state == TrialState.COMPLETE and trial.values else None
        if value is not None and self._improves(value):
            self.since_best = 0
            if self.value is not None and self._at_least(value, float(self.value)):
                self.reached = f"the objective reached {value:g} (stop_when.value={self.value})"
        else:
            self.since_best += 1
            if self.patience is not None and self.since_best >= int(self.patience):
                self.reached = (
                    f"no improvement in {self.since_best} trials (stop_when.patience={self.patience})"
                )

    def stop_reason(self, now: float | None = None) -> str | None:
        """Why no new trial may start, or None while the budget lasts."""
        if self.reached is not None:
            return self.reached
        elapsed = (time.monotonic() if now is None else now) - self.start
        if self.timeout is not None and elapsed >= float(self.timeout):
            return f"timeout after {elapsed:.0f} s (timeout={self.timeout:g} s)"
        return None

    def _improves(self, value: float) -> bool:
        if (value > self.best) if self.maximize else (value < self.best):
            self.best = value
            return True
        return False

    def _at_least(self, value: float, target: float) -> bool:
        return value >= target if self.maximize else value <= target
