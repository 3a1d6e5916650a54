"""`check_sweep`: every bad Optuna sweep config is one `HyraxError` naming its key, found before anything
is created. In process, on the tiny app's config composed by Hydra (`app/conf/quadratic.yaml`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from hyrax.errors import HyraxError
from hyrax.search.checks import check_sweep
from hyrax.search.config import register_configs

CONF = Path(__file__).resolve().parent / "app" / "conf"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _sweeper(*overrides: str, config: str = "quadratic") -> Any:
    """`hydra.sweeper` of the app's config composed with `overrides`."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config, overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.sweeper


def _refused(sweeper: Any, arguments: list[str] = ()) -> HyraxError:
    with pytest.raises(HyraxError) as info:
        check_sweep(sweeper, arguments)
    assert info.value.fix, "a refusal says what to write instead"
    return info.value


@pytest.fixture(scope="module")
def sweeper() -> Any:
    return _sweeper()


@pytest.mark.parametrize(
    "config, overrides, arguments",
    [
        ("quadratic", [], []),
        ("sphere", [], []),
        ("quadratic", ["hydra/sweeper/sampler=grid"], ["x=choice(0,1)", "y=range(0,2)"]),
        ("quadratic", ["hydra/sweeper/pruner=median"], ["x=tag(log, interval(0.1, 1))", "z=3"]),
        ("quadratic", ["hydra.sweeper.enqueue_trials=[{x:0.5},{x:1,y:2}]"], []),
        ("quadratic", ["hydra.sweeper.custom_search_space=hyrax.search.checks.check_sweep"], []),
        ("quadratic", ["hydra.sweeper.direction=[minimize,maximize]", "hydra/sweeper/sampler=nsgaii"], []),
    ],
)
def test_good_configs_pass(config: str, overrides: list[str], arguments: list[str]) -> None:
    check_sweep(_sweeper(*overrides, config=config), arguments)


@pytest.mark.parametrize(
    "arguments, key, needle",
    [
        (["x=tag(foo, interval(0.1, 1))"], "x", "unknown tag foo"),
        (["x=tag(log, choice(a,b))"], "x", "applies to interval(...) only"),
        (["x=tag(log, range(1,10))"], "x", "applies to interval(...) only"),
        (["x=range(0,5,step=0)"], "x", "step > 0"),
        (["x=range(5,1)"], "x", "low <= high"),
        (["x=interval(1, 0)"], "x", "low <= high"),
        (["x=tag(log, interval(0, 1))"], "x", "low > 0"),
        (["x=choice([1,2],[3])"], "x", "choices must be str, int, float, bool or null"),
        (["y=1", "x=interval(1, 0)"], "x", "not a valid range"),
    ],
)
def test_bad_sweep_arguments_name_their_key(
    sweeper: Any, arguments: list[str], key: str, needle: str
) -> None:
    error = _refused(sweeper, arguments)
    assert error.key == key and needle in error.message


@pytest.mark.parametrize(
    "overrides, arguments, key, needle",
    [
        (["hydra/sweeper/sampler=grid"], [], "hydra.sweeper.params.x", "grid sampler needs discrete"),
        (["hydra/sweeper/sampler=grid"], ["x=choice(1,2)", "y=interval(0,1)"], "y", "continuous range"),
        (
            ["hydra/sweeper/sampler=grid"],
            ["x=tag(log, int(interval(1,8)))", "y=choice(0,1)"],
            "x",
            "log-scaled",
        ),
        (["hydra.sweeper.params.x='tag(log)'"], [], "hydra.sweeper.params.x", "cannot parse"),
        (["hydra.sweeper.params.x='interval(1,0)'"], [], "hydra.sweeper.params.x", "low <= high"),
        (["hydra.sweeper.params.x='tag(foo, interval(0.1, 1))'"], [], "hydra.sweeper.params.x", "tag foo"),
        (["hydra.sweeper.params.x='interval(0,1'"], [], "hydra.sweeper.params.x", "cannot parse"),
        (["hydra.sweeper.direction=up"], [], "hydra.sweeper.direction", "got 'up'"),
        (["hydra.sweeper.direction=[minimize,upward]"], [], "hydra.sweeper.direction", "upward"),
        (["hydra.sweeper.n_jobs=0"], [], "hydra.sweeper.n_jobs", "got 0"),
        (["hydra.sweeper.n_trials=-1"], [], "hydra.sweeper.n_trials", "got -1"),
        (["hydra.sweeper.max_failure_rate=2"], [], "hydra.sweeper.max_failure_rate", "got 2.0"),
        (["hydra.sweeper.max_failure_rate=-0.1"], [], "hydra.sweeper.max_failure_rate", "got -0.1"),
        (
            ["hydra.sweeper.sampler._target_=optuna.samplers.NoSuchSampler"],
            [],
            "hydra.sweeper.sampler._target_",
            "optuna.samplers has no NoSuchSampler",
        ),
        (
            ["hydra.sweeper.sampler._target_=no_such_package.Sampler"],
            [],
            "hydra.sweeper.sampler._target_",
            "there is no module no_such_package",
        ),
        (
            ["hydra.sweeper.sampler._target_=optuna.create_study"],
            [],
            "hydra.sweeper.sampler._target_",
            "is not a class",
        ),
        (["+hydra.sweeper.sampler.no_such_argument=1"], [], "hydra.sweeper.sampler", "no_such_argument"),
        (
            ["hydra.sweeper.pruner={_target_:optuna.pruners.NoSuchPruner}"],
            [],
            "hydra.sweeper.pruner._target_",
            "optuna.pruners has no NoSuchPruner",
        ),
        (
            ["hydra/sweeper/pruner=median", "+hydra.sweeper.pruner.no_such_argument=1"],
            [],
            "hydra.sweeper.pruner",
            "no_such_argument",
        ),
        (
            ["hydra.sweeper.custom_search_space=no_such_module.configure"],
            [],
            "hydra.sweeper.custom_search_space",
            "there is no module no_such_module",
        ),
        (
            ["hydra.sweeper.custom_search_space=hyrax.search.checks.KEY"],
            [],
            "hydra.sweeper.custom_search_space",
            "is not a function",
        ),
        (
            ["hydra.sweeper.enqueue_trials=[{x:0.5},{w:1.0}]"],
            [],
            "hydra.sweeper.enqueue_trials",
            "trial 1 names w, which the search space does not have (it has x, y)",
        ),
        (
            ["hydra.sweeper.storage={_target_:optuna.storages.NoSuchStorage}"],
            [],
            "hydra.sweeper.storage._target_",
            "optuna.storages has no NoSuchStorage",
        ),
    ],
)
def test_bad_sweeper_settings_name_their_key(
    overrides: list[str], arguments: list[str], key: str, needle: str
) -> None:
    error = _refused(_sweeper(*overrides), arguments)
    assert error.key == key and needle in error.message, error


@pytest.mark.skipif(importlib.util.find_spec("cmaes") is not None, reason="cmaes is installed")
def test_a_sampler_whose_package_is_missing_is_refused() -> None:
    error = _refused(_sweeper("hydra/sweeper/sampler=cmaes"))
    assert error.key == "hydra.sweeper.sampler" and "pip install cmaes" in error.fix


@pytest.mark.parametrize(
    "entry, key, needle",
    [
        (
            {"type": "weird", "low": 0, "high": 1},
            "hydra.sweeper.search_space.w.type",
            "unknown distribution type",
        ),
        ({"low": 0, "high": 1}, "hydra.sweeper.search_space.w.type", "unknown distribution type None"),
        ({"type": "float", "high": 1}, "hydra.sweeper.search_space.w", "needs low"),
        ({"type": "categorical"}, "hydra.sweeper.search_space.w", "needs choices"),
        ({"type": "int", "low": 5, "high": 1}, "hydra.sweeper.search_space.w", "low <= high"),
        ({"type": "float", "low": "a", "high": 1}, "hydra.sweeper.search_space.w", "not a valid float"),
        ("float", "hydra.sweeper.search_space.w", "expected a mapping"),
    ],
)
def test_bad_legacy_search_space_entries_name_their_key(
    sweeper: Any, entry: Any, key: str, needle: str
) -> None:
    settings = OmegaConf.to_container(sweeper)
    settings.update(params=None, search_space={"w": entry})
    error = _refused(settings)
    assert error.key == key and needle in error.message


def test_the_legacy_search_space_is_ignored_when_params_are_set(sweeper: Any) -> None:
    settings = OmegaConf.to_container(sweeper)
    settings["search_space"] = {"w": {"type": "weird"}}  # the sweep warns and uses params
    check_sweep(settings, [])


def test_other_sweepers_are_left_alone() -> None:
    garbage = {"_target_": BASIC_SWEEPER, "n_jobs": 0, "direction": "up", "params": {"x": "interval(1, 0)"}}
    check_sweep(garbage, ["x=tag(foo, interval(1, 0))"])
    check_sweep({}, [])
