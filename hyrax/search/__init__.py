"""Hyperparameter search for Hyrax: the Optuna sweeper behind `hydra/sweeper=optuna`.

- `hyrax.search.sweeper.OptunaSweep`: the sweep loop (ask, launch, tell).
- `hyrax.search.trial.open_trial`: job-side reporting of intermediate values, for pruning.
- `hyrax.search.checks.check_sweep`: a sweep config's checks, made before anything is created.

Hydra imports the sweeper plugin (and so this package) on every run: nothing here imports
optuna until it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FailureRateExceeded", "OptunaSweep", "TrialReporter", "open_trial"]

_LAZY = {
    "FailureRateExceeded": "hyrax.search.sweeper",
    "OptunaSweep": "hyrax.search.sweeper",
    "TrialReporter": "hyrax.search.trial",
    "open_trial": "hyrax.search.trial",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
