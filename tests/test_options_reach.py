"""Every shipped option reaches the object it configures: for each YAML under conf/ (model, data_set,
criterion, optimizer, scheduler) and each key in it, the part built from the composed config shows the
configured value, both the shipped default and a changed one.

The options and keys are read from disk, so a new option or key is covered at once: a key this file
cannot observe yet fails its test, asking for a probe value and an observation to be added below.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from hydra.utils import get_class
from hyraxtest import TESTS
from omegaconf import OmegaConf
from torch import nn

from hyrax import Hyrax
from hyrax.compat.overrides import given_keys, render
from hyrax.train.components import assemble, pick_device

CONF = TESTS.parent / "conf"
GROUPS = ("model", "data_set", "criterion", "optimizer", "scheduler")
ANY = "*"  # an observation or probe that holds for every option of a group


# --- what is shipped ----------------------------------------------------------------------------------


def shipped_node(group: str, option: str) -> dict[str, Any]:
    """The keys a shipped option file sets for its group (a `@package _global_` file nests them)."""
    path = CONF / group / f"{option}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if "@package _global_" in path.read_text():
        node = node[group]
    node.pop("defaults", None)
    return node


def shipped_options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file under conf/<group>/."""
    return [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def shipped_keys() -> list[tuple[str, str, str]]:
    """(group, option, key) for every key of every shipped option but `_target_`."""
    return [(g, o, k) for g, o in shipped_options() for k in shipped_node(g, o) if k != "_target_"]


# --- the data the file options read -------------------------------------------------------------------

RNG = np.random.default_rng(7)


def _table(rows: int) -> dict[str, np.ndarray]:
    """Inputs and labels under two names each, so that a key choosing one of them can be observed."""
    return {
        "x": RNG.normal(size=(rows, 3)).astype(np.float32),
        "y": RNG.integers(0, 3, rows),
        "x2": RNG.normal(size=(rows, 3)).astype(np.float32),
        "y2": RNG.integers(0, 3, rows),
    }


# file name -> its arrays; a CSV holds x as f0..f2, y as `label`, y2 as `target`.
FILES = {
    f"{stem}.{ext}": _table(rows) for ext in ("npz", "h5", "csv") for stem, rows in (("a", 30), ("b", 37))
}
FILES["semi.csv"] = _table(25)
DELIMITERS = {"semi.csv": ";"}
IMAGES = "images.npz"


def write_files(where: Path) -> None:
    """Write every file of FILES (and the images a CNN needs) into `where`."""
    for name, arrays in FILES.items():
        path = where / name
        if path.suffix == ".npz":
            np.savez(path, **arrays)
        elif path.suffix == ".h5":
            with h5py.File(path, "w") as f:
                for key, values in arrays.items():
                    f[key] = values
        else:
            columns = np.column_stack([arrays["x"], arrays["y"], arrays["y2"]])
            delimiter = DELIMITERS.get(name, ",")
            header = delimiter.join(["f0", "f1", "f2", "label", "target"])
            np.savetxt(path, columns, delimiter=delimiter, header=header, comments="", fmt="%.7g")
    images = RNG.random((40, 3, 8, 8)).astype(np.float32)
    np.savez(where / IMAGES, x=images, y=np.arange(40) % 2)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path)


# --- building -----------------------------------------------------------------------------------------


@dataclass
class Built:
    """What a run builds from its config: the data side, and the model with its training parts."""

    data: Any
    model: nn.Module
    config: dict[str, Any]

    def part(self, group: str) -> Any:
        """The object a group's config configures."""
        if group == "model":
            return self.model
        if group == "data_set":
            return self.data.data_set
        return getattr(self.model, group)


def context(group: str, option: str) -> dict[str, Any]:
    """Other settings an option needs to be built: data that fits it, small where size does not matter."""
    if group == "data_set":
        extension = {"numpy": "npz", "hdf5": "h5", "csv": "csv"}.get(option)
        return {"model": "linear", **({"data_set.path": f"a.{extension}"} if extension else {})}
    if (group, option) == ("model", "cnn"):
        return {"data_set": "numpy", "data_set.path": IMAGES}
    if group == "criterion" and option != "cross_entropy":
        return {"data_set": "synthetic_regression", "data_set.n_samples": 200}
    return {"data_set.n_samples": 200}


def build(group: str, option: str, settings: dict[str, Any]) -> Built:
    """Compose `group=option` with `settings` as command-line overrides, and build the run's parts."""
    overrides = [f"{group}={option}", *(f"{k}={render(v)}" for k, v in settings.items())]
    overrides.append("mlflow.enabled=false")
    config = copy.deepcopy(Hyrax(overrides=overrides).config)
    data, model = assemble(config, pick_device("cpu"), given_keys(overrides))
    return Built(data, model, config)


# --- observing ----------------------------------------------------------------------------------------


def linears(built: Built) -> list[nn.Linear]:
    """The model's linear layers, in order."""
    return [m for m in built.model.modules() if isinstance(m, nn.Linear)]


def convs(built: Built) -> list[nn.Conv2d]:
    """The model's convolutions, in order."""
    return [m for m in built.model.modules() if isinstance(m, nn.Conv2d)]


def only(values: list[Any]) -> Any:
    """The one value all of `values` share; else the list itself (which then compares unequal)."""
    return values[0] if values and all(v == values[0] for v in values) else values


def which(values: torch.Tensor, candidates: dict[str, np.ndarray]) -> str | None:
    """The name of the candidate array equal to `values`, or None."""
    found = [
        name
        for name, array in candidates.items()
        if tuple(array.shape) == tuple(values.shape) and np.allclose(array, values.numpy(), atol=1e-6)
    ]
    return only(found) if found else None


def inputs_of(name: str) -> np.ndarray:
    """The inputs a data set reads from a file of FILES (a CSV's inputs: every column but `label`)."""
    arrays = FILES[name]
    if name.endswith(".csv"):
        return np.column_stack([arrays["x"], arrays["y2"]]).astype(np.float32)
    return arrays["x"]


def source_file(built: Built) -> str | None:
    """Which file of FILES the data set's inputs came from."""
    return which(built.data.data_set.x, {name: inputs_of(name) for name in FILES})


def the_file(built: Built) -> dict[str, np.ndarray]:
    """The arrays of the file a file data set was configured to read."""
    return FILES[built.config["data_set"]["path"]]


def nan_handling(built: Built) -> str | None:
    """What the train batches' converter does to a NaN input: None (kept), zero or quantile."""
    x = torch.tensor([[float("nan"), 1.0, 2.0, 3.0]])
    value = float(built.data.batches["train"].convert((x, torch.tensor([0])))[0][0, 0])
    return None if math.isnan(value) else "zero" if value == 0.0 else "quantile"


def data_seed(built: Built) -> int | None:
    """The seed (0..9) with which the data set's class, at its defaults otherwise, makes this data."""
    data_set = built.data.data_set
    return next((s for s in range(10) if torch.equal(type(data_set)(seed=s).x, data_set.x)), None)


def cluster_spread(built: Built) -> float:
    """The standard deviation of the inputs around their class's mean: the classification data's noise."""
    x, y = built.data.data_set.x, built.data.data_set.y
    return float(torch.cat([x[y == c] - x[y == c].mean(0) for c in torch.unique(y)]).std())


def residual_spread(built: Built) -> float:
    """The standard deviation of the targets around their least-squares fit: the regression data's noise."""
    x, y = built.data.data_set.x, built.data.data_set.y
    fit = torch.linalg.lstsq(x, y).solution
    return float((y - x @ fit).std())


def output_count(built: Built) -> int:
    """What `num_outputs: null` means: the data set's class count, or its label width."""
    y = built.data.data_set.y
    return int(y[0].numel()) if torch.is_floating_point(y) else len(torch.unique(y))


@dataclass(frozen=True)
class Observation:
    """How to read one key's value back from the built parts; `rel` for values only estimated."""

    read: Callable[[Built], Any]
    rel: float = 0.0


def setting(group: str, key: str) -> Observation:
    """An attribute of that name on the group's part (torch keeps most constructor arguments so)."""
    return Observation(lambda b: getattr(b.part(group), key))


def param_group(key: str) -> Observation:
    """A value of the optimizer's (only) parameter group."""
    return Observation(lambda b: b.model.optimizer.param_groups[0][key])


OBSERVE: dict[tuple[str, str, str], Observation] = {
    ("model", ANY, "num_outputs"): Observation(lambda b: linears(b)[-1].out_features),
    ("model", "mlp", "hidden"): Observation(lambda b: only([m.out_features for m in linears(b)[:-1]])),
    ("model", "mlp", "depth"): Observation(lambda b: len(linears(b)) - 1),
    ("model", "mlp", "dropout"): Observation(
        lambda b: only([m.p for m in b.model.modules() if isinstance(m, nn.Dropout)] or [0.0])
    ),
    ("model", "cnn", "channels"): Observation(lambda b: convs(b)[0].out_channels),
    ("model", "cnn", "depth"): Observation(lambda b: len(convs(b))),
    ("model", "cnn", "hidden"): Observation(lambda b: linears(b)[0].out_features),
    ("model", "linear", "bias"): Observation(lambda b: linears(b)[-1].bias is not None),
    ("data_set", ANY, "n_samples"): Observation(lambda b: len(b.data.data_set)),
    ("data_set", ANY, "n_features"): Observation(lambda b: int(b.data.sample[0].shape[-1])),
    ("data_set", ANY, "n_classes"): Observation(lambda b: len(torch.unique(b.data.data_set.y))),
    ("data_set", ANY, "n_targets"): Observation(lambda b: int(b.data.data_set.y.shape[1])),
    ("data_set", ANY, "seed"): Observation(data_seed),
    ("data_set", ANY, "nan_mode"): Observation(nan_handling),
    ("data_set", "synthetic_classification", "noise"): Observation(cluster_spread, rel=0.05),
    ("data_set", "synthetic_regression", "noise"): Observation(residual_spread, rel=0.05),
    ("data_set", ANY, "path"): Observation(source_file),
    ("data_set", ANY, "x_key"): Observation(
        lambda b: which(b.data.data_set.x, {k: v for k, v in the_file(b).items() if k.startswith("x")})
    ),
    ("data_set", ANY, "y_key"): Observation(
        lambda b: which(b.data.data_set.y, {k: v for k, v in the_file(b).items() if k.startswith("y")})
    ),
    ("data_set", "csv", "label_column"): Observation(
        lambda b: which(b.data.data_set.y, {"label": the_file(b)["y"], "target": the_file(b)["y2"]})
    ),
    ("data_set", "csv", "delimiter"): Observation(lambda b: DELIMITERS.get(source_file(b) or "", ",")),
    ("criterion", ANY, "label_smoothing"): setting("criterion", "label_smoothing"),
    ("criterion", ANY, "delta"): setting("criterion", "delta"),
    ("optimizer", ANY, "lr"): param_group("lr"),
    ("optimizer", ANY, "weight_decay"): param_group("weight_decay"),
    ("optimizer", ANY, "momentum"): param_group("momentum"),
    ("scheduler", ANY, "T_max"): setting("scheduler", "T_max"),
    ("scheduler", ANY, "eta_min"): setting("scheduler", "eta_min"),
    ("scheduler", ANY, "step_size"): setting("scheduler", "step_size"),
    ("scheduler", ANY, "gamma"): setting("scheduler", "gamma"),
    ("scheduler", ANY, "mode"): setting("scheduler", "mode"),
    ("scheduler", ANY, "factor"): setting("scheduler", "factor"),
    ("scheduler", ANY, "patience"): setting("scheduler", "patience"),
}

# A value unlike every shipped default, per key; `extra` are settings that value needs besides.
PROBES: dict[tuple[str, str, str], tuple[Any, dict[str, Any]]] = {
    ("model", ANY, "num_outputs"): (7, {}),
    ("model", ANY, "hidden"): (12, {}),
    ("model", ANY, "depth"): (3, {}),
    ("model", ANY, "dropout"): (0.25, {}),
    ("model", ANY, "channels"): (4, {}),
    ("model", ANY, "bias"): (False, {}),
    ("data_set", ANY, "n_samples"): (123, {}),
    ("data_set", ANY, "n_features"): (7, {}),
    ("data_set", ANY, "n_classes"): (3, {}),
    ("data_set", ANY, "n_targets"): (3, {}),
    ("data_set", ANY, "noise"): (0.5, {}),
    ("data_set", ANY, "seed"): (5, {}),
    ("data_set", ANY, "nan_mode"): ("zero", {}),
    ("data_set", "numpy", "path"): ("b.npz", {}),
    ("data_set", "hdf5", "path"): ("b.h5", {}),
    ("data_set", "csv", "path"): ("b.csv", {}),
    ("data_set", ANY, "x_key"): ("x2", {}),
    ("data_set", ANY, "y_key"): ("y2", {}),
    ("data_set", ANY, "label_column"): ("target", {}),
    ("data_set", ANY, "delimiter"): (";", {"data_set.path": "semi.csv"}),
    ("criterion", ANY, "label_smoothing"): (0.2, {}),
    ("criterion", ANY, "delta"): (2.5, {}),
    ("optimizer", ANY, "lr"): (0.05, {}),
    ("optimizer", ANY, "weight_decay"): (0.003, {}),
    ("optimizer", ANY, "momentum"): (0.5, {}),
    ("scheduler", ANY, "T_max"): (7, {}),
    ("scheduler", ANY, "eta_min"): (0.005, {}),
    ("scheduler", ANY, "step_size"): (3, {}),
    ("scheduler", ANY, "gamma"): (0.3, {}),
    ("scheduler", ANY, "mode"): ("max", {}),
    ("scheduler", ANY, "factor"): (0.25, {}),
    ("scheduler", ANY, "patience"): (4, {}),
}


def lookup(table: dict[tuple[str, str, str], Any], group: str, option: str, key: str) -> Any:
    """The entry for this option's key, else the group-wide one; fails asking for one when neither exists."""
    for candidate in ((group, option, key), (group, ANY, key)):
        if candidate in table:
            return table[candidate]
    name = "OBSERVE (how to read it from the built object)" if table is OBSERVE else "PROBES (a value)"
    pytest.fail(
        f"conf/{group}/{option}.yaml has the key '{key}', which tests/test_options_reach.py cannot check "
        f"yet: add ('{group}', '{option}' or ANY, '{key}') to {name}",
        pytrace=False,
    )


def check(observation: Observation, built: Built, expected: Any, what: str) -> None:
    """Assert that the observed value is the expected one (within `rel` for estimated values)."""
    seen = observation.read(built)
    wanted = pytest.approx(expected, rel=observation.rel) if observation.rel else expected
    assert seen == wanted, f"{what}: configured {expected!r}, the built object shows {seen!r}"


# --- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "option"), shipped_options(), ids=[f"{g}={o}" for g, o in shipped_options()]
)
def test_shipped_defaults_reach_the_built_object(group, option):
    settings = context(group, option)
    built = build(group, option, settings)
    part, target = built.part(group), shipped_node(group, option)["_target_"]
    if target is None:
        assert part is None, f"{group}={option} names no class, yet {part!r} was built"
    else:
        assert type(part) is get_class(target), f"{group}={option} built a {type(part)}, not {target}"
    for key in shipped_node(group, option):
        if key == "_target_":
            continue
        expected = built.config[group][key]  # the composed value: interpolations resolved
        if key == "num_outputs" and expected is None:
            expected = output_count(built)
        check(lookup(OBSERVE, group, option, key), built, expected, f"{group}={option} {group}.{key}")


@pytest.mark.parametrize(
    ("group", "option", "key"), shipped_keys(), ids=[f"{g}={o}-{k}" for g, o, k in shipped_keys()]
)
def test_a_changed_value_reaches_the_built_object(group, option, key):
    observation = lookup(OBSERVE, group, option, key)
    value, extra = lookup(PROBES, group, option, key)
    shipped = shipped_node(group, option)[key]
    assert value != shipped, f"the probe for {group}.{key} equals the shipped value {shipped!r}: pick another"
    settings = {**context(group, option), **extra, f"{group}.{key}": value}
    check(observation, build(group, option, settings), value, f"{group}={option} {group}.{key}={value!r}")
