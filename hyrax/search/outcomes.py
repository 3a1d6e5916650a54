"""What a finished job means for its trial: COMPLETE with its values, PRUNED, or FAIL with a reason."""

from __future__ import annotations

import math
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

Outcome = tuple[TrialState, list[float] | None, str | None]


def job_outcome(job_return: JobReturn, n_objectives: int = 1) -> Outcome:
    """(state, values, error message) of a job; never re-raises the job's exception.

    A job that returns a float (a list of `n_objectives` floats for several objectives) is COMPLETE;
    one that raises `optuna.TrialPruned` is PRUNED; one that raises, or returns None, NaN or
    anything else, is FAIL.
    """
    result = job_return._return_value
    if job_return.status == JobStatus.COMPLETED:
        values, error = _values(result, n_objectives)
        return (TrialState.COMPLETE, values, None) if error is None else (TrialState.FAIL, None, error)
    if isinstance(result, optuna.TrialPruned):
        return TrialState.PRUNED, None, None
    if isinstance(result, BaseException):
        return TrialState.FAIL, None, f"{type(result).__name__}: {result}"
    return TrialState.FAIL, None, f"the job did not finish (status {job_return.status.name})"


def _values(result: Any, n: int) -> tuple[list[float] | None, str | None]:
    expected = "a float" if n == 1 else f"a list of {n} floats"
    try:
        values = [float(result)] if n == 1 else [float(v) for v in result]
    except (TypeError, ValueError):
        return None, f"the job returned {result!r}, expected {expected}"
    if len(values) != n:
        return None, f"the job returned {result!r}, expected {expected}"
    if any(math.isnan(v) for v in values):
        return None, f"the job returned NaN ({result!r})"
    return values, None
