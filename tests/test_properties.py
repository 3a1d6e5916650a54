"""Property test: a wrong value for any key of any shipped config is one clear error, and costs nothing.

For every key of every option shipped in conf/ (model, data_set, criterion, optimizer, scheduler) and
of the typed sections (train, general, data_loader, mlflow, export, verb, ckpt_path, from_run),
Hypothesis generates values that are wrong for it: the wrong type, a number out of range, a name that
does not exist. Each goes through the real `hyrax-run` entry point (in this process, for speed) in a
fresh directory, and
must end with exit code 2, an "Error in <key>" message, no traceback, and nothing written but the
record of a FAILED run: no checkpoint, no predictions, no MLflow run in any other state.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import typing
from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from hyrax import cli
from hyrax.config import COMPONENT_GROUPS, HyraxConfig, builtin_dir

pytestmark = pytest.mark.slow

EXAMPLES_PER_KEY = 4
# Keys whose text values name something that must exist (a metric, a device, a file, a column, a
# function, a mode): any made-up name is wrong for them.
NAMES = {
    "verb",
    "ckpt_path",
    "from_run",
    "export.format",
    "train.device",
    "train.resume",
    "train.data_sample",
    "train.early_stopping.monitor",
    "train.early_stopping.mode",
    "train.objective.metric",
    "train.objective.direction",
    "general.log_level",
    "data_loader.collate_fn",
    "data_set.path",
    "data_set.x_key",
    "data_set.y_key",
    "data_set.label_column",
    "data_set.delimiter",
    "data_set.nan_mode",
    "scheduler.mode",
}
# Free text where any string is a fine value (a folder, a name): only other types are wrong.
FREE_TEXT = {
    "general.data_dir",
    "general.results_dir",
    "mlflow.experiment",
    "mlflow.run_name",
    "mlflow.tracking_uri",
    "mlflow.parent_run_id",
    "mlflow.register_model",
    "export.path",
}
# Set by the sweeper for its jobs, not by users.
INTERNAL_SECTIONS = {"trial"}
SECTIONS = ("train", "general", "data_loader", "mlflow", "export")


@dataclass(frozen=True)
class Case:
    """A key to get wrong, the kind of value it holds, and the overrides that choose its option."""

    key: str
    kind: str  # int | float | bool | name | text | mapping
    base: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real files for the file-based data sets."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype("float32"), rng.integers(0, 2, size=40)
    np.savez(root / "d.npz", x=x, y=y)
    with h5py.File(root / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
    lines = ["a,b,c,label", *(f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(x, y, strict=True))]
    (root / "d.csv").write_text("\n".join(lines) + "\n")
    return {"csv": root / "d.csv", "hdf5": root / "d.h5", "numpy": root / "d.npz"}


def shipped_cases() -> list[Case]:
    """Every key of every shipped option and typed section, with the kind of value it takes."""
    cases = [*_component_cases(), *_typed_cases(HyraxConfig, "")]
    return sorted(set(cases), key=lambda c: (c.key, c.base))


def _component_cases() -> Iterator[Case]:
    for group in COMPONENT_GROUPS:
        for path in sorted((builtin_dir("conf") / group).glob("*.yaml")):
            node = OmegaConf.load(path)
            if "defaults" in node:  # a global-package option: its keys sit under the group's name
                node = node[group]
            for name in node:
                if name in ("_target_", "defaults"):
                    continue
                key = f"{group}.{name}"
                value = OmegaConf.to_container(node, resolve=False)[name]
                yield Case(key, _kind(key, value), (f"{group}={path.stem}",))


def _kind(key: str, value: object) -> str:
    if key in NAMES:
        return "name"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int) or (isinstance(value, str) and value.startswith("${")):
        return "int"  # T_max follows ${train.epochs}
    if isinstance(value, float):
        return "float"
    if value is None:  # num_outputs: null means "from the data"; it takes a whole number
        return "int"
    raise AssertionError(f"{key}: add its kind of value to tests/test_properties.py")


def _typed_cases(schema: type, prefix: str) -> Iterator[Case]:
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        if not prefix and (f.name in COMPONENT_GROUPS or f.name in INTERNAL_SECTIONS):
            continue
        hint = hints[f.name]
        nested = next((t for t in typing.get_args(hint) or (hint,) if is_dataclass(t)), None)
        if nested is not None:
            if prefix or f.name in SECTIONS:
                yield from _typed_cases(nested, f"{key}.")
            continue
        yield Case(key, _typed_kind(key, hint))


def _typed_kind(key: str, hint: object) -> str:
    if key in NAMES:
        return "name"
    if key in FREE_TEXT:
        return "text"
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = typing.get_origin(args[0]) or args[0]
    kinds = {bool: "bool", int: "int", float: "float", str: "text", dict: "mapping"}
    if base in kinds:
        return kinds[base]
    raise AssertionError(f"{key}: add its kind of value to tests/test_properties.py")


_made_up = st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8).map(lambda s: f"zz{s}")
_lists = st.lists(st.integers(0, 9), min_size=1, max_size=3).map(lambda v: "[" + ",".join(map(str, v)) + "]")
_negative_ints = st.integers(-(10**6), -1).map(str)
_negative_floats = st.floats(-1e6, -1e-3, allow_nan=False).map(repr)
_fractional = st.floats(0.1, 100, allow_nan=False).filter(lambda v: v != int(v)).map(repr)
WRONG = {
    "int": st.one_of(_negative_ints, _fractional, _made_up, _lists),
    "float": st.one_of(_negative_floats, _made_up, _lists),
    "bool": st.one_of(_made_up, _lists),
    "name": st.one_of(_made_up, _lists),
    "text": _lists,
    "mapping": st.one_of(_lists, _made_up),
}

CASES = shipped_cases()


def test_the_catalogue_covers_every_shipped_group_and_section() -> None:
    groups = {c.key.split(".")[0] for c in CASES}
    assert groups == {*COMPONENT_GROUPS, *SECTIONS, "verb", "ckpt_path", "from_run", "from_run_allow_drift"}
    assert len(CASES) > 60, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.key}[{','.join(c.base)}]")
@settings(
    max_examples=EXAMPLES_PER_KEY,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # each example is a whole run: report it as drawn, do not shrink
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_wrong_value_is_one_clear_error_and_writes_nothing(
    case: Case, data: st.DataObject, data_files: dict[str, Path]
) -> None:
    value = data.draw(WRONG[case.kind], label=case.key)
    base = list(case.base)
    option = next((b.split("=")[1] for b in base if b.startswith("data_set=")), None)
    if option in data_files and case.key != "data_set.path":
        base.append(f"data_set.path={data_files[option]}")
    with tempfile.TemporaryDirectory() as where:
        code, stderr = run_in_process(Path(where), [*base, "train.epochs=1", f"{case.key}={value}"])
        assert code == 2, f"{case.key}={value}: exit {code}\n{stderr}"
        assert f"Error in {case.key}" in stderr, f"{case.key}={value}:\n{stderr}"
        assert "Traceback" not in stderr, stderr
        assert_nothing_kept(Path(where))


def run_in_process(cwd: Path, args: list[str]) -> tuple[int, str]:
    """Run `hyrax-run ARGS` through its real entry point in this process; (exit code, stderr)."""
    err, code = io.StringIO(), 0
    argv, before = sys.argv, os.getcwd()
    sys.argv = ["hyrax-run", *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
        os.chdir(before)
    return code, err.getvalue()


def assert_nothing_kept(root: Path) -> None:
    """Only the record of a failed attempt: Hydra's config and log, the MLflow store with FAILED runs and
    what they record from the start (their config, the installed packages, TensorBoard's event files)."""
    kept = [p for p in root.rglob("*") if p.is_file()]
    record = ("hyrax_run.json",)  # the MLflow run id of the failed run, beside Hydra's config and log
    started = {"environment", "tensorboard", "mlartifacts"}  # a run's record from its start
    allowed = [
        p
        for p in kept
        if p.name.startswith("mlflow.db")
        or ".hydra" in p.parts
        or p.suffix == ".log"
        or p.name in record
        or started & set(p.relative_to(root).parts)
    ]
    assert sorted(set(kept) - set(allowed)) == [], f"files written: {sorted(set(kept) - set(allowed))}"
    if (root / "mlflow.db").is_file():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert {r.info.status for r in runs} <= {"FAILED"}, [r.info.status for r in runs]
