"""Search space: Hydra sweep overrides -> Optuna distributions, and trial values -> job overrides.

Mapping (same as the released hydra-optuna-sweeper):

- ``choice(a, b)`` / ``a,b`` / a YAML list in ``params``  -> ``CategoricalDistribution``
- ``range(start, stop, step)`` -> ``IntDistribution(start, stop, step)``, or
  ``FloatDistribution(start, stop, step=step)`` if any bound is a float; ``stop`` is
  included, as in the released plugin (for the grid sampler, ``stop`` is excluded, like
  Python's ``range``); ``shuffle(range(...))`` -> ``CategoricalDistribution``
- ``interval(a, b)`` -> ``FloatDistribution``, ``IntDistribution`` if both bounds are ints
  (``int(interval(...))``); ``tag(log, interval(...))`` sets ``log=True``
- anything else is a fixed value passed to every job unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
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

    def grid_search_space(self) -> dict[str, list[Any]]:
        """The ``search_space`` argument of ``optuna.samplers.GridSampler``."""
        for name, points in self.grid.items():
            if points is None:
                raise ValueError(
                    f"The grid sampler needs discrete parameters; '{name}' is "
                    f"{self.distributions[name]}. Use choice(...) or range(...)."
                )
        return {name: list(points) for name, points in self.grid.items() if points is not None}


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str] = (),
    parser: OverridesParser | None = None,
    legacy: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """Parse ``hydra.sweeper.params`` then the command-line ``arguments`` (which win).

    ``legacy`` is the deprecated ``hydra.sweeper.search_space`` form, parsed first.
    """
    lines = [_param_line(str(k), v) for k, v in (params or {}).items()]
    lines.extend(arguments)
    parser = parser or OverridesParser.create()
    space = SearchSpace()
    for name, config in (legacy or {}).items():
        dist = distribution_from_config(config)
        space.distributions[str(name)] = dist
        space.grid[str(name)] = points_inclusive(dist)
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        for part in (space.distributions, space.fixed, space.grid):
            part.pop(key, None)
        dist = distribution_from_override(override)
        if dist is None:
            space.fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
        else:
            space.distributions[key] = dist
            space.grid[key] = _grid_points(override.value(), dist)
    return space


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
        choices = ",".join(format_value(v) for v in _plain(value))
        return f"{key}=choice({choices})"
    return f"{key}={value}"


def distribution_from_override(override: Override) -> BaseDistribution | None:
    """The distribution of a sweep override, or None for a plain (fixed) value."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_choices(override))
    if isinstance(value, RangeSweep):
        return _range_distribution(value)
    if isinstance(value, IntervalSweep):
        return _interval_distribution(value)
    raise ValueError(f"Override '{override.input_line}' is not supported by the Optuna sweeper.")


def _choices(override: Override) -> list[Any]:
    choices = list(override.sweep_iterator(transformer=Transformer.identity))
    for choice in choices:
        if not isinstance(choice, _PRIMITIVES):
            raise ValueError(
                f"'{override.input_line}': choices must be str, int, float, bool or null, "
                f"got {type(choice).__name__} ({choice!r})."
            )
    return choices


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


def distribution_from_config(config: Mapping[str, Any]) -> BaseDistribution:
    """Distribution from the deprecated ``search_space`` form {type, low, high, log, step, choices}."""
    kind = str(config["type"]).split(".")[-1]
    if kind == "categorical":
        return CategoricalDistribution(list(_plain(config["choices"])))
    low, high = config["low"], config["high"]
    log, step = bool(config.get("log", False)), config.get("step")
    if kind == "int":
        return IntDistribution(int(low), int(high), log=log, step=1 if step is None else int(step))
    if kind == "float":
        return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))
    raise ValueError(f"Unknown distribution type {config['type']!r} in hydra.sweeper.search_space.")


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


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
