"""Checks of a `hydra/sweeper=optuna` config that need no storage, made before anything is created.

`check_sweep` runs when a multirun starts (before the MLflow parent run is opened) and again at the
start of `OptunaSweep.sweep`, so that a bad sweep config creates no sweep dir, no `multirun.yaml` and
no study: it is one `HyraxError` naming the offending key, and the command exits with code 2.

Importing this module is cheap (no optuna): every multirun imports it, whatever its sweeper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hyrax.config import plain
from hyrax.errors import HyraxError
from hyrax.search.config import SWEEPER_TARGET

if TYPE_CHECKING:
    from hyrax.search.space import SearchSpace

KEY = "hydra.sweeper"
DIRECTIONS = ("minimize", "maximize")


def check_sweep(sweeper_cfg: Mapping[str, Any], arguments: Sequence[str]) -> None:
    """Raise a `HyraxError` for the first problem in an Optuna sweep's config; ignore other sweepers.

    `sweeper_cfg` is the composed `config.hydra.sweeper` and `arguments` the task overrides
    (`config.hydra.overrides.task`), whose sweeps join the search space. Checked: `direction`,
    `n_trials`, `n_jobs`, `max_failure_rate`, every search-space entry (and that the grid sampler
    gets a discrete one), that the sampler and the pruner build, that `custom_search_space` imports,
    that `enqueue_trials` name searched parameters, the shape of `storage`, and the budgets.
    """
    if not sweeper_cfg or str(sweeper_cfg.get("_target_")) != SWEEPER_TARGET:
        return
    from hyrax.search import builders

    settings = plain(sweeper_cfg)
    parse_directions(settings.get("direction", "minimize"))
    check_counts(
        settings.get("n_trials", 0), settings.get("n_jobs", 1), settings.get("max_failure_rate", 0.0)
    )
    space = _space(settings, [str(a) for a in arguments])
    sampler = settings.get("sampler") or {}
    builders.build_sampler(
        sampler, grid=space.grid_search_space() if builders.is_grid_sampler(sampler) else None
    )
    builders.build_pruner(settings.get("pruner"))
    custom = load_custom_search_space(settings.get("custom_search_space"))
    _check_enqueued(settings.get("enqueue_trials"), space, custom is not None)
    _check_storage(settings.get("storage"))
    check_budget(settings.get("timeout"), settings.get("stop_when"), settings.get("direction", "minimize"))


def check_budget(timeout: Any, stop_when: Any, direction: Any) -> None:
    """`timeout` > 0 seconds; `stop_when.patience` >= 1; `stop_when` only for a single objective."""
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise HyraxError(
            f"timeout must be a number of seconds above 0, or null, got {timeout!r}",
            key=f"{KEY}.timeout",
            fix="write hydra.sweeper.timeout=3600 (no new trial after an hour), or null for no limit",
        )
    stop_when = dict(stop_when or {})
    patience = stop_when.get("patience")
    if patience is not None and not (isinstance(patience, int) and patience >= 1):
        raise HyraxError(
            f"stop_when.patience must be a whole number of at least 1, or null, got {patience!r}",
            key=f"{KEY}.stop_when.patience",
            fix="write hydra.sweeper.stop_when.patience=10 (stop after 10 trials without improvement)",
        )
    set_keys = [k for k in ("value", "patience") if stop_when.get(k) is not None]
    if set_keys and len(parse_directions(direction)) > 1:
        raise HyraxError(
            "stop_when needs a single objective: a multi-objective study has no one best value",
            key=f"{KEY}.stop_when.{set_keys[0]}",
            fix="drop stop_when, or use hydra.sweeper.timeout to bound the sweep",
        )


def parse_directions(direction: Any) -> list[str]:
    """The direction names of `"minimize"`, or of a list such as `["minimize", "maximize"]`."""
    direction = plain(direction)
    items = list(direction) if isinstance(direction, (list, tuple)) else [direction]
    names = [str(getattr(d, "name", d)).lower() for d in items]
    if not names or any(n not in DIRECTIONS for n in names):
        raise HyraxError(
            f"direction must be minimize or maximize, or a list of them, got {direction!r}",
            key=f"{KEY}.direction",
            fix="write hydra.sweeper.direction=minimize, or [minimize,maximize] for two objectives",
        )
    return names


def check_counts(n_trials: int, n_jobs: int, max_failure_rate: float) -> None:
    """`n_trials` >= 0, `n_jobs` >= 1 and `max_failure_rate` in [0, 1]."""
    if n_trials < 0:
        raise HyraxError(
            f"n_trials must be 0 or more, got {n_trials}",
            key=f"{KEY}.n_trials",
            fix="write hydra.sweeper.n_trials=20 (the number of finished trials the study should end with)",
        )
    if n_jobs < 1:
        raise HyraxError(
            f"n_jobs must be 1 or more, got {n_jobs}",
            key=f"{KEY}.n_jobs",
            fix="write hydra.sweeper.n_jobs=2 (the number of trials launched together)",
        )
    if not 0.0 <= max_failure_rate <= 1.0:
        raise HyraxError(
            f"max_failure_rate must be between 0 and 1, got {max_failure_rate}",
            key=f"{KEY}.max_failure_rate",
            fix="write hydra.sweeper.max_failure_rate=0.2 (a fifth of n_trials may fail)",
        )


def load_custom_search_space(path: str | None) -> Callable[..., None] | None:
    """The function `custom_search_space` names (`fn(cfg, trial)`), or None when it is not set."""
    if not path:
        return None
    from hyrax.search.builders import locate

    key, fix = (
        f"{KEY}.custom_search_space",
        "give the dotted path of a function fn(cfg, trial), e.g. mypkg.configure",
    )
    try:
        function = locate(str(path))
    except ImportError as err:
        raise HyraxError(f"cannot import the function '{path}': {err}", key=key, fix=fix) from err
    if not callable(function):
        raise HyraxError(f"'{path}' is not a function", key=key, fix=fix)
    return function


def _space(settings: Mapping[str, Any], arguments: list[str]) -> SearchSpace:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hyrax.search.space import parse_search_space

    hydra = GlobalHydra.instance()
    loader = hydra.config_loader() if hydra.is_initialized() else None  # glob(...) lists config groups
    params = settings.get("params")
    legacy = settings.get("search_space") if params is None else None
    parser = OverridesParser.create(config_loader=loader)
    return parse_search_space(params, arguments, parser=parser, legacy=legacy)


def _check_enqueued(enqueued: Any, space: SearchSpace, custom: bool) -> None:
    key = f"{KEY}.enqueue_trials"
    known = set(space.distributions)
    fix = (
        f"name only searched parameters ({', '.join(sorted(known))}) in each enqueued trial"
        if known
        else "search some parameters (hydra.sweeper.params) before enqueueing trials of them"
    )
    for i, params in enumerate(enqueued or ()):
        if not isinstance(params, Mapping):
            raise HyraxError(f"trial {i} is {params!r}, not a mapping of parameters", key=key, fix=fix)
        unknown = sorted(set(map(str, params)) - known)
        if unknown and not custom:  # custom_search_space may suggest parameters of its own
            raise HyraxError(
                f"trial {i} names {', '.join(unknown)}, which the search space does not have "
                f"(it has {', '.join(sorted(known)) or 'nothing'})",
                key=key,
                fix=fix,
            )


def _check_storage(storage: Any) -> None:
    if not isinstance(storage, Mapping):
        return
    from hyrax.search.builders import locate

    try:
        locate(str(storage.get("_target_")))
    except ImportError as err:
        raise HyraxError(
            f"cannot import the storage class {storage.get('_target_')!r}: {err}",
            key=f"{KEY}.storage._target_",
            fix="give null (a journal file in the sweep dir), a journal file path, an RDB URL "
            "such as sqlite:///study.db, or a _target_ config of an Optuna storage class",
        ) from err
