"""Build Optuna samplers and pruners from ``_target_`` configs, with clear errors."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

# Extra packages some Optuna samplers import only when they first sample.
_EXTRA_PACKAGES = {
    "CmaEsSampler": ("cmaes",),
    "GPSampler": ("scipy", "torch"),
    "QMCSampler": ("scipy",),
}


def target_class(config: Mapping[str, Any], what: str) -> type:
    """The class a ``_target_`` config points to (ImportError with a hint if it is missing)."""
    target = config.get("_target_") if config else None
    if not target:
        raise ValueError(f"The {what} config needs a _target_, got {dict(config or {})}.")
    try:
        return get_class(str(target))
    except Exception as err:
        raise ImportError(
            f"Cannot import the {what} '{target}': {err}. Is the package that provides it installed?"
        ) from err


def is_grid_sampler(config: Mapping[str, Any]) -> bool:
    """Whether a sampler config is Optuna's ``GridSampler`` (it needs the grid at build time)."""
    import optuna

    cls = target_class(config, "sampler")
    return issubclass(cls, optuna.samplers.GridSampler)


def build_sampler(
    config: Mapping[str, Any],
    grid: Mapping[str, list[Any]] | None = None,
    seed_offset: int = 0,
) -> Any:
    """Instantiate a sampler config; ``grid`` is the search space of a ``GridSampler``.

    ``seed_offset`` is added to a non-null ``seed`` (not for the grid, whose seed fixes the
    grid order), so a resumed study does not replay the same random proposals.
    """
    cls = target_class(config, "sampler")
    _check_packages(cls, str(config["_target_"]))
    kwargs = _plain(config)
    kwargs.pop("_partial_", None)
    if grid is not None:
        return instantiate(kwargs, search_space=dict(grid))
    if seed_offset and kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + seed_offset
    return instantiate(kwargs)


def build_pruner(config: Mapping[str, Any] | None) -> Any:
    """Instantiate a pruner config; null (or an empty config) gives ``NopPruner``."""
    import optuna

    config = _plain(config) if config is not None else None
    if not config:
        return optuna.pruners.NopPruner()
    target_class(config, "pruner")
    return instantiate(config)


def _check_packages(cls: type, target: str) -> None:
    missing = [
        name for name in _EXTRA_PACKAGES.get(cls.__name__, ()) if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ImportError(
            f"The sampler {target} needs the package(s) {', '.join(missing)}, "
            f"which are not installed: pip install {' '.join(missing)}"
        )


def _plain(config: Any) -> dict[str, Any]:
    if isinstance(config, DictConfig):
        return dict(OmegaConf.to_container(config, resolve=True))  # type: ignore[arg-type]
    return dict(config)
