"""Range checks of the typed settings, made before anything runs.

Hydra's schema checks a setting's type (`train.batch_size=abc` fails as it composes); these checks
catch the values of the right type that make no sense (`train.batch_size=-4`), so that they are one
clear error naming the key, not a crash deep in the loop. `check_ranges` runs before a run's
directory or MLflow run exists (from `hyrax.multirun.EarlyChecks`) and again in `hyrax.api.run_verb`
for the Python API.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyrax.errors import HyraxError
from hyrax.train import placement, precision

SPLIT_KEYS = ("train", "validate", "test")
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit


@dataclass(frozen=True)
class Rule:
    """One setting's valid values: `accepts(value)`, described as `wanted`, with a good `example`."""

    key: str
    accepts: Callable[[Any], bool]
    wanted: str
    example: str
    optional: bool = False  # null is fine (it means "off" or "use the default")


def _whole(low: int, high: float = math.inf) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _non_negative_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _fraction(v: Any) -> bool:
    return _non_negative_number(v) and v <= 1


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


RULES = (
    Rule("train.epochs", _whole(1), "a whole number of at least 1", "10"),
    Rule("train.batch_size", _whole(1), "a whole number of at least 1", "64"),
    Rule("train.num_workers", _whole(0), "a whole number of at least 0", "0"),
    Rule("train.seed", _whole(0, MAX_SEED), f"a whole number from 0 to {MAX_SEED}", "42"),
    Rule("train.grad_clip", _positive_number, "a number above 0 (null: no clipping)", "1.0", optional=True),
    Rule("train.log_every_n_steps", _whole(1), "a whole number of at least 1", "50"),
    Rule("train.accumulate_grad_batches", _whole(1), "a whole number of at least 1", "1"),
    Rule("train.devices", _whole(1), "a whole number of ranks, at least 1", "2"),
    Rule("train.precision", precision.known, "32, bf16-mixed or 16-mixed", "bf16-mixed"),
    Rule("train.data_on_device", placement.known, "auto, true or false", "auto"),
    Rule(
        "train.early_stopping.patience",
        _whole(0),
        "a whole number of at least 0 (null: no early stopping)",
        "5",
        optional=True,
    ),
    Rule("train.early_stopping.min_delta", _non_negative_number, "a number of at least 0", "0.0"),
    Rule("train.early_stopping.mode", _one_of("min", "max"), "min or max", "min"),
    Rule("train.checkpoint.every_n_epochs", _whole(1), "a whole number of at least 1", "1"),
    Rule(
        "train.limit_batches",
        _whole(1),
        "a whole number of at least 1 (null: every batch)",
        "1",
        optional=True,
    ),
    Rule("train.overfit_batches", _whole(0), "a whole number of at least 0 (0: off)", "1"),
    Rule("mlflow.outage_wait_s", _non_negative_number, "a number of seconds, at least 0", "30"),
    Rule("data_loader.batch_size", _whole(1), "a whole number of at least 1", "64", optional=True),
    Rule("data_loader.num_workers", _whole(0), "a whole number of at least 0", "0", optional=True),
    *(
        Rule(f"train.split.{name}", _fraction, "a fraction from 0 to 1", default)
        for name, default in zip(SPLIT_KEYS, ("0.8", "0.1", "0.1"), strict=True)
    ),
)

# The valid values of the constructor parameters of the classes Hyrax ships configs for, by the class
# (or a base class) that takes them. A user's own classes check their own arguments.
_OPTIMIZER = "torch.optim.optimizer.Optimizer"
_SCHEDULER = "torch.optim.lr_scheduler.LRScheduler"
_PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"
_LOSS = "torch.nn.modules.loss._Loss"
_MODELS = ("hyrax.models.builtin.MLP", "hyrax.models.builtin.CNN", "hyrax.models.builtin.Linear")
_DATA = ("hyrax.data_sets.builtin.SyntheticClassification", "hyrax.data_sets.builtin.SyntheticRegression")
_AT_LEAST_1 = (_whole(1), "a whole number of at least 1")
_AT_LEAST_0 = (_whole(0), "a whole number of at least 0")
_NON_NEGATIVE = (_non_negative_number, "a number of at least 0")
_POSITIVE = (_positive_number, "a number above 0")
_MODEL_RULES = {
    "hidden": _AT_LEAST_1,
    "depth": _AT_LEAST_0,
    "channels": _AT_LEAST_1,
    "num_outputs": _AT_LEAST_1,
    "dropout": (
        lambda v: _non_negative_number(v) and v < 1,
        "a fraction from 0 up to (not including) 1",
    ),
}
_DATA_RULES = {
    "n_samples": _AT_LEAST_1,
    "n_features": _AT_LEAST_1,
    "n_classes": (_whole(2), "a whole number of at least 2"),
    "n_targets": _AT_LEAST_1,
    "noise": _NON_NEGATIVE,
    "seed": (_whole(0, MAX_SEED), f"a whole number from 0 to {MAX_SEED}"),
}
PARAMETER_RULES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    _OPTIMIZER: {
        "lr": _NON_NEGATIVE,
        "weight_decay": _NON_NEGATIVE,
        "momentum": _NON_NEGATIVE,
        "dampening": _NON_NEGATIVE,
        "eps": _POSITIVE,
    },
    _SCHEDULER: {
        "T_max": _AT_LEAST_1,
        "step_size": _AT_LEAST_1,
        "gamma": _POSITIVE,
        "eta_min": _NON_NEGATIVE,
    },
    _PLATEAU: {
        "factor": (lambda v: _positive_number(v) and v < 1, "a number above 0 and below 1"),
        "patience": _AT_LEAST_0,
        "mode": (_one_of("min", "max"), "min or max"),
        "threshold": _NON_NEGATIVE,
        "cooldown": _AT_LEAST_0,
        "min_lr": _NON_NEGATIVE,
        "eps": _NON_NEGATIVE,
    },
    _LOSS: {"label_smoothing": (_fraction, "a fraction from 0 to 1"), "delta": _POSITIVE, "beta": _POSITIVE},
    **{name: _MODEL_RULES for name in _MODELS},
    **{name: _DATA_RULES for name in _DATA},
    "hyrax.data_sets.builtin.CSVDataSet": {
        "delimiter": (lambda v: isinstance(v, str) and len(v) == 1, "a single character"),
    },
}

_ABSENT = object()


def check_ranges(config: Mapping[str, Any]) -> None:
    """Raise `HyraxError` naming the first setting whose value is out of its range."""
    for rule in RULES:
        value = select(config, rule.key)
        if value is _ABSENT or (value is None and rule.optional):
            continue
        if value is None or not rule.accepts(value):
            raise HyraxError(
                f"{rule.key} must be {rule.wanted}, not {value!r}",
                key=rule.key,
                fix=f"set {rule.key}={rule.example}",
            )
    _check_split_total(config)
    _check_objective(config)


def check_parameters(group: str, cls: type, params: Mapping[str, Any]) -> None:
    """Raise `HyraxError` naming `group.<param>` when a shipped class would get a value out of its range
    (null is left to the class: it means "work it out", as `num_outputs: null` does)."""
    rules: dict[str, tuple[Callable[[Any], bool], str]] = {}
    for klass in reversed(cls.__mro__):
        rules.update(PARAMETER_RULES.get(f"{klass.__module__}.{klass.__qualname__}", {}))
    for name, value in params.items():
        if name not in rules or value is None:
            continue
        accepts, wanted = rules[name]
        if not accepts(value):
            default = _default_of(cls, name)
            raise HyraxError(
                f"{group}.{name} must be {wanted}, not {value!r}",
                key=f"{group}.{name}",
                fix=f"set {group}.{name}={default}"
                if default is not None
                else f"give {group}.{name} {wanted}",
            )


def _default_of(cls: type, name: str) -> Any:
    import inspect

    try:
        parameter = inspect.signature(cls).parameters.get(name)
    except (TypeError, ValueError):
        return None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def select(config: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key, or `_ABSENT` when some part of the path is missing."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _check_split_total(config: Mapping[str, Any]) -> None:
    split = select(config, "train.split")
    if not isinstance(split, Mapping):
        return
    total = sum(float(split.get(name) or 0.0) for name in SPLIT_KEYS)
    if total > 1.0 + 1e-9:
        raise HyraxError(
            f"the split fractions add up to {total:g}, more than the whole data set",
            key="train.split",
            fix="lower train.split.train/validate/test so that they add up to at most 1",
        )
    if not split.get("train"):
        raise HyraxError(
            "the train split is empty: there would be nothing to train on",
            key="train.split.train",
            fix="set train.split.train=0.8",
        )


def _check_objective(config: Mapping[str, Any]) -> None:
    metric = select(config, "train.objective.metric")
    if metric is _ABSENT:
        return
    metrics = [metric] if isinstance(metric, str) else metric
    if not isinstance(metrics, Sequence) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise HyraxError(
            f"train.objective.metric must be a metric's name (or a list of names), not {metric!r}",
            key="train.objective.metric",
            fix="set train.objective.metric=val/loss",
        )
    direction = select(config, "train.objective.direction")
    directions = [direction] if isinstance(direction, str) else list(direction or [])
    if not directions or any(d not in ("minimize", "maximize") for d in directions):
        raise HyraxError(
            f"train.objective.direction must be minimize or maximize (or a list of them), not {direction!r}",
            key="train.objective.direction",
            fix="set train.objective.direction=minimize",
        )
