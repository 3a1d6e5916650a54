"""Unit tests: params syntax -> Optuna distributions, values -> override strings, storage specs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hyrax.errors import HyraxError
from hyrax.search.space import format_value, parse_search_space
from hyrax.search.storage import resolve_storage


@pytest.mark.parametrize(
    "line, expected",
    [
        ("k=choice(1,2)", CategoricalDistribution([1, 2])),
        ("k=1,2,3", CategoricalDistribution([1, 2, 3])),
        ("k=choice(true, false)", CategoricalDistribution([True, False])),
        ("k=choice('hello', world)", CategoricalDistribution(["hello", "world"])),
        ("k=choice(a, 2, 1.5)", CategoricalDistribution(["a", 2, 1.5])),
        ("k=range(1,3)", IntDistribution(1, 3)),
        ("k=range(0,10,step=2)", IntDistribution(0, 10, step=2)),
        ("k=range(-5.5, 5.5, step=0.5)", FloatDistribution(-5.5, 5.5, step=0.5)),
        ("k=float(range(1,4))", FloatDistribution(1.0, 4.0, step=1.0)),
        ("k=interval(1, 5)", FloatDistribution(1.0, 5.0)),
        ("k=interval(1.0, 5.0)", FloatDistribution(1.0, 5.0)),
        ("k=int(interval(1.0, 5.0))", IntDistribution(1, 5)),
        ("k=tag(log, interval(1e-4, 1.0))", FloatDistribution(1e-4, 1.0, log=True)),
        ("k=tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
    ],
)
def test_sweep_syntax_parses_to_distribution(line: str, expected: object) -> None:
    space = parse_search_space({}, [line])
    assert space.distributions == {"k": expected}
    assert space.fixed == {}


def test_params_config_plain_values_lists_and_command_line_precedence() -> None:
    params = {"a": "interval(0, 1)", "b": 3, "c": ["x", "y z"], "d": "choice(1,2)"}
    space = parse_search_space(params, ["d=7", "+e=hello", "db=mysql"])
    assert space.distributions == {
        "a": FloatDistribution(0.0, 1.0),
        "c": CategoricalDistribution(["x", "y z"]),
    }
    assert space.fixed == {"b": "b=3", "d": "d=7", "+e": "+e=hello", "db": "db=mysql"}
    assert space.sources == {"a": "hydra.sweeper.params.a", "c": "hydra.sweeper.params.c"}
    assert parse_search_space(params, ["a=interval(2, 3)"]).sources["a"] == "a"  # the command line's


def test_legacy_search_space_form() -> None:
    legacy = {
        "x": {"type": "float", "low": -5.5, "high": 5.5, "step": 0.5},
        "y": {"type": "categorical", "choices": [-5, 0, 5]},
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "n": {"type": "int", "low": 1, "high": 4},
    }
    space = parse_search_space(None, [], legacy=legacy)
    assert space.distributions == {
        "x": FloatDistribution(-5.5, 5.5, step=0.5),
        "y": CategoricalDistribution([-5, 0, 5]),
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "n": IntDistribution(1, 4),
    }
    assert space.grid["n"] == [1, 2, 3, 4] and space.grid["lr"] is None


def test_grid_points_follow_python_range_and_reject_continuous() -> None:
    space = parse_search_space(
        {"x": "choice(a,b)", "y": "range(0,3)", "z": "range(0.0,1.0,step=0.25)", "w": "int(interval(1,3))"}
    )
    assert space.grid_search_space() == {
        "x": ["a", "b"],
        "y": [0, 1, 2],
        "z": [0.0, 0.25, 0.5, 0.75],
        "w": [1, 2, 3],
    }
    with pytest.raises(HyraxError, match="grid sampler needs discrete") as info:
        parse_search_space({"x": "interval(0.0, 1.0)"}).grid_search_space()
    assert info.value.key == "hydra.sweeper.params.x"


def test_non_primitive_choices_are_rejected() -> None:
    with pytest.raises(HyraxError, match="choices must be") as info:
        parse_search_space({}, ["k=choice([1,2],[3])"])
    assert info.value.key == "k"


@pytest.mark.parametrize(
    "value",
    [
        0,
        -3,
        1.5,
        1e-5,
        -2.5e10,
        float("inf"),
        True,
        False,
        None,
        "adam",
        "a b",
        "it's",
        "1.5",
        "true",
        "null",
        "/abs/path.journal",
        "sqlite:////tmp/a.db",
        "back\\slash",
        "end\\",
        "q\\'s",
        {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "max_resource": "auto"},
        [1, "two", None],
    ],
)
def test_format_value_round_trips_through_the_override_parser(value: object) -> None:
    override = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])[0]
    assert override.value() == value


def test_storage_specs_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_storage(None, "multirun/x") == str(tmp_path / "multirun/x/optuna.journal")
    assert resolve_storage("sqlite:///rel.db", "d") == f"sqlite:///{tmp_path}/rel.db"
    assert resolve_storage("sqlite:////abs.db", "d") == "sqlite:////abs.db"
    assert resolve_storage("postgresql://u@h/db", "d") == "postgresql://u@h/db"
    assert resolve_storage("study.journal", "d") == str(tmp_path / "study.journal")


def test_shuffled_range_is_categorical() -> None:
    dist = parse_search_space({}, ["k=shuffle(range(1,4))"]).distributions["k"]
    assert isinstance(dist, CategoricalDistribution) and sorted(dist.choices) == [1, 2, 3]
