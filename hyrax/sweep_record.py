"""What a sweep is, as its MLflow parent run records it from the start: its name, search space,
sampler, pruner, number of trials, direction and objective metric.

Both Hydra's grid sweeper (`optimizer.lr=1e-4,1e-3`) and Hyrax's Optuna sweeper are described; the
search space is parsed with the same code the Optuna sweeper uses, so the record is what it searches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("hyrax")
SPACE_PREFIX = "space."


def is_optuna(config: DictConfig) -> bool:
    """Whether the multirun's sweeper is an Optuna sweeper (it has a sampler), not Hydra's grid."""
    return "sampler" in (config.hydra.sweeper or {})


def sweep_label(config: DictConfig) -> str:
    """What the sweep is called: its preset (`sweep=demo`), else its study's name, else its kind."""
    preset = OmegaConf.select(config, "hydra.runtime.choices.sweep", default=None)
    if preset:
        return str(preset)
    study = OmegaConf.select(config, "hydra.sweeper.study_name", default=None)
    if study:
        return str(study)
    return "optuna" if is_optuna(config) else "grid"


def sweep_params(config: DictConfig, overrides: Sequence[str]) -> dict[str, str]:
    """The parent run's parameters: `space.<key>` for each searched key, sampler, pruner, n_trials,
    direction and the objective metric. Never raises: a space it cannot read is logged and left out."""
    sweeper = config.hydra.sweeper
    objective = config.train.objective
    try:
        space = _optuna_space(sweeper, overrides) if is_optuna(config) else _grid_space(sweeper, overrides)
    except Exception as err:
        log.warning("could not record the sweep's search space: %s", err)
        space = {}
    params = {f"{SPACE_PREFIX}{k}": v for k, v in space.items()}
    if is_optuna(config):
        params.update(_component("sampler", sweeper.get("sampler")))
        params.update(_component("pruner", sweeper.get("pruner")))
        params["n_trials"] = str(sweeper.get("n_trials"))
        direction = sweeper.get("direction")
    else:
        params["sampler"] = "grid"
        params["n_trials"] = str(_grid_size(sweeper, overrides))
        direction = objective.direction
    params["direction"] = _joined(direction)
    params["objective.metric"] = _joined(objective.metric)
    return params


def _joined(value: Any) -> str:
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _component(name: str, node: Any) -> dict[str, str]:
    """`sampler=TPESampler` and `sampler.seed=123`: the class and every setting given."""
    if node is None:
        return {name: "none"}
    settings = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = str(settings.pop("_target_", "none"))
    found = {name: target.rsplit(".", 1)[-1]}
    found.update({f"{name}.{k}": str(v) for k, v in settings.items() if v is not None})
    return found


def _optuna_space(sweeper: Any, overrides: Sequence[str]) -> dict[str, str]:
    from hyrax.search.space import parse_search_space

    params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else None
    legacy = sweeper.get("search_space")
    legacy = OmegaConf.to_container(legacy) if legacy is not None and params is None else None
    space = parse_search_space(params, list(overrides), legacy=legacy)
    described = {k: describe_distribution(d) for k, d in space.distributions.items()}
    return described


def describe_distribution(dist: Any) -> str:
    """An Optuna distribution in a few words: `float [0.0001, 0.1] log`, `int [8, 64] step 8`,
    `choice(16, 32, 64)`."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(str(c) for c in dist.choices)})"
    kind = "int" if type(dist).__name__.startswith("Int") else "float"
    text = f"{kind} [{dist.low:g}, {dist.high:g}]"
    if getattr(dist, "step", None) not in (None, 1):
        text += f" step {dist.step:g}"
    return text + (" log" if getattr(dist, "log", False) else "")


def _grid_overrides(sweeper: Any, overrides: Sequence[str]) -> list[Any]:
    """The sweep overrides of a grid: the sweeper's `params` then the command line's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params: Mapping[str, Any] = sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    return [o for o in parsed if o.is_sweep_override()]


def _grid_space(sweeper: Any, overrides: Sequence[str]) -> dict[str, str]:
    return {
        o.get_key_element(): f"grid({', '.join(o.sweep_string_iterator())})"
        for o in _grid_overrides(sweeper, overrides)
    }


def _grid_size(sweeper: Any, overrides: Sequence[str]) -> int:
    try:
        return math.prod(len(list(o.sweep_string_iterator())) for o in _grid_overrides(sweeper, overrides))
    except Exception:
        return 0
