"""Search space: Hydra sweep overrides -> Optuna distributions, and trial values -> job overrides.

Mapping (same as the released hydra-optuna-sweeper):

- `choice(a, b)` / `a,b` / a YAML list in `params`  -> `CategoricalDistribution`
- `range(start, stop, step)` -> `IntDistribution(start, stop, step)`, or
  `FloatDistribution(start, stop, step=step)` if any bound is a float; `stop` is
  included, as in the released plugin (for the grid sampler, `stop` is excluded, like
  Python's `range`); `shuffle(range(...))` -> `CategoricalDistribution`
- `interval(a, b)` -> `FloatDistribution`, `IntDistribution` if both bounds are ints
  (`int(interval(...))`); `tag(log, interval(...))` sets `log=True`
- anything else is a fixed value passed to every job unchanged.

Other tags, `log` on a choice or a range, and bounds Optuna refuses are a `HyraxError` naming the
entry's key: `hydra.sweeper.params.NAME` for `params`, `NAME` for a command-line sweep.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from omegaconf import ListConfig
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hyrax.config import plain
from hyrax.errors import HyraxError

PARAMS_KEY = "hydra.sweeper.params"
LEGACY_KEY = "hydra.sweeper.search_space"
SWEEP_SYNTAX = "choice(a, b), range(start, stop, step), interval(low, high) or tag(log, interval(low, high))"
_BOUNDS_FIX = (
    "give the lower bound first, a step above 0, and with tag(log, ...) a lower bound above 0, "
    "e.g. tag(log, interval(1e-4, 1e-1))"
)
_PRIMITIVES = (str, int, float, bool, type(None))
_BARE_STRING = re.compile(r"^[A-Za-z_/][\w\-/.@]*$")
_RESERVED = {"true", "false", "null", "inf", "nan"}
# In Hydra's quoted strings, backslashes only escape quotes: double the ones before a quote
# or the closing quote, and escape the quote.
_QUOTE_ESCAPES = re.compile(r"(\\*)('|$)")


@dataclass
class SearchSpace:
    """Distributions Optuna samples, plus fixed overrides passed to every job as given."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    # Grid points of each discrete parameter (None if it is continuous), for GridSampler.
    grid: dict[str, list[Any] | None] = field(default_factory=dict)
    # Where each searched parameter was given: `hydra.sweeper.params.x`, or `x` on the command line.
    sources: dict[str, str] = field(default_factory=dict)

    def grid_search_space(self) -> dict[str, list[Any]]:
        """The `search_space` argument of `optuna.samplers.GridSampler`."""
        for name, points in self.grid.items():
            if points is None:
                raise HyraxError(
                    f"the grid sampler needs discrete parameters; "
                    f"{name} is {_continuous(self.distributions[name])}",
                    key=self.sources.get(name, name),
                    fix=f"give {name} choice(...) or range(start, stop, step), "
                    "or pick another sampler (hydra/sweeper/sampler=tpe)",
                )
        return {name: list(points) for name, points in self.grid.items() if points is not None}

    def drop(self, name: str) -> None:
        """Forget what was given for `name` (a later entry replaces it)."""
        for part in (self.distributions, self.fixed, self.grid, self.sources):
            part.pop(name, None)


def _continuous(dist: Any) -> str:
    scale = "log-scaled" if getattr(dist, "log", False) else "continuous"
    return f"a {scale} range from {dist.low} to {dist.high}"


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str] = (),
    parser: OverridesParser | None = None,
    legacy: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """Parse `hydra.sweeper.params` then the command-line `arguments` (which win).

    `legacy` is the deprecated `hydra.sweeper.search_space` form, parsed first. A bad entry is a
    `HyraxError` naming its key.
    """
    space = SearchSpace()
    for name, config in (legacy or {}).items():
        key = f"{LEGACY_KEY}.{name}"
        dist = distribution_from_config(config, key)
        space.distributions[str(name)] = dist
        space.grid[str(name)] = points_inclusive(dist)
        space.sources[str(name)] = key
    lines = [(_param_line(str(k), v), f"{PARAMS_KEY}.{k}") for k, v in (params or {}).items()]
    lines.extend((str(line), None) for line in arguments)
    parser = parser or OverridesParser.create()
    for line, source in lines:
        override = _parse(parser, line, source or line.split("=", 1)[0])
        name = override.get_key_element()
        space.drop(name)
        dist = distribution_from_override(override, source or name)
        if dist is None:
            space.fixed[name] = override.input_line or f"{name}={override.get_value_element_as_str()}"
        else:
            space.distributions[name] = dist
            space.grid[name] = _grid_points(override.value(), dist)
            space.sources[name] = source or name
    return space


def _parse(parser: OverridesParser, line: str, key: str) -> Override:
    try:
        [override] = parser.parse_overrides([line])
    except HydraException as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip() and not ln.startswith("See ")]
        raise HyraxError(
            f"cannot parse '{line}': {lines[-1] if lines else err}", key=key, fix=f"write {SWEEP_SYNTAX}"
        ) from err
    return override


def _grid_points(sweep: Any, dist: BaseDistribution) -> list[Any] | None:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(sweep, RangeSweep):  # Python range semantics: stop excluded
        count = max(0, math.ceil(round((sweep.stop - sweep.start) / sweep.step, 9)))
        return [_tidy(sweep.start + i * sweep.step) for i in range(count)]
    return points_inclusive(dist)


def points_inclusive(dist: BaseDistribution) -> list[Any] | None:
    """All values of a discrete distribution (None if it is continuous or log-scaled)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None and not dist.log:
        count = round((dist.high - dist.low) / dist.step) + 1
        return [_tidy(dist.low + i * dist.step) for i in range(count)]
    return None


def _tidy(value: Any) -> Any:
    return round(value, 12) if isinstance(value, float) else value


def _param_line(key: str, value: Any) -> str:
    if isinstance(value, (ListConfig, list, tuple)):
        choices = ",".join(format_value(v) for v in plain(value))
        return f"{key}=choice({choices})"
    return f"{key}={value}"


def distribution_from_override(override: Override, key: str | None = None) -> BaseDistribution | None:
    """The distribution of a sweep override, or None for a plain (fixed) value.

    `key` names the override in errors (its own key by default).
    """
    if not override.is_sweep_override():
        return None
    key = key or override.get_key_element()
    value = override.value()
    _check_tags(override, key)
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_choices(override, key))
    if isinstance(value, RangeSweep):
        return _bounded(lambda: _range_distribution(value), override, key)
    if isinstance(value, IntervalSweep):
        return _bounded(lambda: _interval_distribution(value), override, key)
    raise HyraxError(
        f"'{override.input_line}' is not supported by the Optuna sweeper",
        key=key,
        fix=f"write {SWEEP_SYNTAX}",
    )


def _check_tags(override: Override, key: str) -> None:
    tags = set(getattr(override.value(), "tags", ()) or ())
    unknown = sorted(tags - {"log"})
    if unknown:
        raise HyraxError(
            f"unknown tag {', '.join(unknown)} in '{override.input_line}': the Optuna sweeper reads only log",
            key=key,
            fix="write tag(log, interval(low, high)) for a log scale, or no tag",
        )
    if tags and not isinstance(override.value(), IntervalSweep):
        raise HyraxError(
            f"tag(log, ...) in '{override.input_line}' applies to interval(...) only",
            key=key,
            fix="write tag(log, interval(low, high)), or tag(log, int(interval(low, high))) for integers",
        )


def _choices(override: Override, key: str) -> list[Any]:
    try:
        choices = list(override.sweep_iterator(transformer=Transformer.identity))
    except HydraException as err:  # glob(...) without Hydra's config loader
        raise HyraxError(f"cannot list the choices of '{override.input_line}': {err}", key=key) from err
    for choice in choices:
        if not isinstance(choice, _PRIMITIVES):
            raise HyraxError(
                f"'{override.input_line}': choices must be str, int, float, bool or null, "
                f"got {type(choice).__name__} ({choice!r})",
                key=key,
                fix="write plain values: choice(16, 64) or choice(adam, sgd)",
            )
    return choices


def _bounded(make: Callable[[], BaseDistribution], override: Override, key: str) -> BaseDistribution:
    try:
        return make()
    except ValueError as err:
        raise HyraxError(
            f"'{override.input_line}' is not a valid range: {err}", key=key, fix=_BOUNDS_FIX
        ) from err


def _range_distribution(value: RangeSweep) -> BaseDistribution:
    assert value.start is not None and value.stop is not None
    step = 1 if value.step is None else value.step
    if any(isinstance(v, float) for v in (value.start, value.stop, step)):
        return FloatDistribution(float(value.start), float(value.stop), step=float(step))
    return IntDistribution(int(value.start), int(value.stop), step=int(step))


def _interval_distribution(value: IntervalSweep) -> BaseDistribution:
    assert value.start is not None and value.end is not None
    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def distribution_from_config(config: Any, key: str = LEGACY_KEY) -> BaseDistribution:
    """Distribution from the deprecated `search_space` form {type, low, high, log, step, choices}.

    `key` names the entry in errors.
    """
    config = plain(config)
    fix = "write {type: float, low: 0.001, high: 0.1, log: true} or {type: categorical, choices: [a, b]}"
    if not isinstance(config, Mapping):
        raise HyraxError(f"expected a mapping, got {config!r}", key=key, fix=fix)
    kind = str(config.get("type")).split(".")[-1]
    needed = {"categorical": ("choices",), "int": ("low", "high"), "float": ("low", "high")}.get(kind)
    if needed is None:
        raise HyraxError(f"unknown distribution type {config.get('type')!r}", key=f"{key}.type", fix=fix)
    missing = [name for name in needed if config.get(name) is None]
    if missing:
        raise HyraxError(f"a {kind} entry needs {' and '.join(missing)}", key=key, fix=fix)
    try:
        return _legacy_distribution(kind, config)
    except (TypeError, ValueError) as err:
        raise HyraxError(
            f"{config} is not a valid {kind} distribution: {err}", key=key, fix=_BOUNDS_FIX
        ) from err


def _legacy_distribution(kind: str, config: Mapping[str, Any]) -> BaseDistribution:
    if kind == "categorical":
        return CategoricalDistribution(list(config["choices"]))
    low, high = config["low"], config["high"]
    log, step = bool(config.get("log", False)), config.get("step")
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=1 if step is None else int(step))
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


def format_value(value: Any) -> str:
    """Render a Python value in Hydra's override grammar (strings quoted when needed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if _BARE_STRING.match(value) and value.lower() not in _RESERVED:
            return value
        return "'" + _QUOTE_ESCAPES.sub(_escape_quote, value) + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{format_key(k)}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Iterable):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    raise TypeError(f"Cannot render {type(value).__name__} {value!r} as a Hydra override value.")


def _escape_quote(match: re.Match[str]) -> str:
    return match.group(1) * 2 + ("\\'" if match.group(2) else "")


def format_key(key: Any) -> str:
    """Render a dict key in Hydra's override grammar."""
    key = str(key)
    return key if re.match(r"^[A-Za-z_][\w\-]*$", key) else format_value(key)
