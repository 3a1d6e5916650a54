"""Build Optuna samplers and pruners from `_target_` configs; a bad config is a `HyraxError`."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from hydra.utils import instantiate

from hyrax.config import plain
from hyrax.errors import HyraxError

# Extra packages some Optuna samplers import only when they first sample.
_EXTRA_PACKAGES = {
    "CmaEsSampler": ("cmaes",),
    "GPSampler": ("scipy", "torch"),
    "QMCSampler": ("scipy",),
}
MOTPE_REMOVED = (
    "the 'motpe' sampler was removed in Optuna 4.0 (MOTPESampler); TPESampler handles several objectives"
)
MOTPE_FIX = "pick hydra/sweeper/sampler=tpe (with a list hydra.sweeper.direction)"
MOTPE_TARGET = "hyrax.search.builders.motpe_removed"
# Samplers older Optuna versions had: what is wrong with them, and what to pick instead.
_REMOVED = {
    "optuna.samplers.MOTPESampler": (MOTPE_REMOVED, MOTPE_FIX),
    MOTPE_TARGET: (MOTPE_REMOVED, MOTPE_FIX),
}


def motpe_removed(**_: Any) -> Any:
    """The `_target_` of `hydra/sweeper/sampler=motpe`: building it says what happened to it."""
    raise ValueError(f"{MOTPE_REMOVED[0].upper()}{MOTPE_REMOVED[1:]}: {MOTPE_FIX}")


_CHOICES = {
    "sampler": "tpe, random, grid, nsgaii, qmc, gp or cmaes",
    "pruner": "median, hyperband, successive_halving or nop",
}


def target_class(config: Mapping[str, Any] | None, what: str) -> type:
    """The class a sampler or pruner config (`what`) points to through its `_target_`."""
    key = f"hydra.sweeper.{what}"
    fix = f"pick hydra/sweeper/{what}=NAME ({_CHOICES[what]}) or give a class path as {key}._target_"
    target = config.get("_target_") if config else None
    if not target:
        raise HyraxError(f"the {what} config needs a _target_, got {dict(config or {})}", key=key, fix=fix)
    if str(target) in _REMOVED:
        problem, instead = _REMOVED[str(target)]
        raise HyraxError(problem, key=key, fix=instead)
    try:
        cls = locate(str(target))
    except ImportError as err:
        raise HyraxError(
            f"cannot import the {what} '{target}': {err}", key=f"{key}._target_", fix=fix
        ) from err
    if not isinstance(cls, type):
        raise HyraxError(f"the {what} '{target}' is not a class", key=f"{key}._target_", fix=fix)
    _check_packages(cls, str(target), key)
    return cls


def locate(path: str) -> Any:
    """The object a dotted path names (`optuna.samplers.TPESampler`), importing modules on the way.

    An `ImportError` says which part is missing.
    """
    parts = path.split(".")
    if not all(parts):
        raise ImportError(f"'{path}' is not a dotted path such as mypkg.module.name")
    obj: Any = _import(parts[0], None)
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif isinstance(obj, ModuleType):
            obj = _import(".".join(parts[: i + 1]), ".".join(parts[:i]))
        else:
            raise ImportError(f"{'.'.join(parts[:i])} has no attribute {part}")
    return obj


def _import(name: str, parent: str | None) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # the module exists, but something it imports does not
            raise
        where = f"{parent} has no {name.rsplit('.', 1)[-1]}" if parent else f"there is no module {name}"
        raise ImportError(where) from err


def is_grid_sampler(config: Mapping[str, Any]) -> bool:
    """Whether a sampler config is Optuna's `GridSampler` (it needs the grid at build time)."""
    import optuna

    return issubclass(target_class(config, "sampler"), optuna.samplers.GridSampler)


def build_sampler(config: Mapping[str, Any], grid: Mapping[str, list[Any]] | None = None) -> Any:
    """Instantiate a sampler config; `grid` is the search space of a `GridSampler`."""
    target_class(config, "sampler")
    kwargs = dict(plain(config))
    kwargs.pop("_partial_", None)
    if grid is not None:
        kwargs["search_space"] = dict(grid)
    return _instantiate(kwargs, "sampler")


def build_pruner(config: Mapping[str, Any] | None) -> Any:
    """Instantiate a pruner config; null (or an empty config) gives `NopPruner`."""
    import optuna

    config = plain(config) if config is not None else None
    if not config:
        return optuna.pruners.NopPruner()
    target_class(config, "pruner")
    return _instantiate(dict(config), "pruner")


def _instantiate(kwargs: dict[str, Any], what: str) -> Any:
    try:
        return instantiate(kwargs)
    except Exception as err:
        cause = err.__cause__ or err
        raise HyraxError(
            f"cannot build the {what} {kwargs['_target_']}: {cause}",
            key=f"hydra.sweeper.{what}",
            fix=f"give only arguments that {kwargs['_target_']} accepts",
        ) from err


def _check_packages(cls: type, target: str, key: str) -> None:
    missing = [
        name for name in _EXTRA_PACKAGES.get(cls.__name__, ()) if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise HyraxError(
            f"the {key.rsplit('.', 1)[-1]} {target} needs the package(s) {', '.join(missing)}, "
            "which are not installed",
            key=key,
            fix=f"pip install {' '.join(missing)}, or pick another one",
        )
