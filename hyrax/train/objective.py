"""The objective a run returns to a sweeper: which metrics it names, and whether they are measured."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hyrax.errors import HyraxError


def check_measured(
    wanted: Any, metrics: Iterable[str], tests_later: bool, measured_by: str = "measured"
) -> None:
    """Fail after the first epoch, not after the last, when `train.objective.metric` (`wanted`) names a
    metric the run will not have: test/ metrics come at the end (when `tests_later`), and val/ falls
    back to train/ when validation did not measure it."""
    have = set(metrics)
    for name in [wanted] if isinstance(wanted, str) else list(wanted):
        later = name.startswith("test/") and tests_later
        fallback = name.startswith("val/") and "train/" + name.removeprefix("val/") in have
        if name not in have and not later and not fallback:
            raise HyraxError(
                f"objective metric '{name}' is not {measured_by} (have: {', '.join(sorted(have))}"
                f"{', and test/ metrics at the end' if tests_later else ''})",
                key="train.objective.metric",
                fix=f"name one of the {measured_by} metrics, e.g. train.objective.metric=val/loss",
            )


def objective(config: Mapping[str, Any], metrics: Mapping[str, float]) -> float | list[float]:
    """The value(s) a sweeper optimises, read from the final metrics by `train.objective.metric`."""
    wanted = config["train"]["objective"]["metric"]
    names = [_available(n, metrics) for n in ([wanted] if isinstance(wanted, str) else list(wanted))]
    missing = [n for n in names if n not in metrics]
    if missing:
        raise HyraxError(
            f"objective metric '{missing[0]}' was not measured (have: {', '.join(sorted(metrics))})",
            key="train.objective.metric",
            fix="name one of the measured metrics",
        )
    values = [float(metrics[n]) for n in names]
    return values[0] if isinstance(wanted, str) else values


def _available(name: str, metrics: Mapping[str, float]) -> str:
    """`val/x` falls back to `train/x` when validation did not measure it, as the best checkpoint does
    (the loop has said so in the log)."""
    fallback = "train/" + name.removeprefix("val/")
    if name.startswith("val/") and name not in metrics and fallback in metrics:
        return fallback
    return name
