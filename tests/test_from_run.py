"""Re-running, forking and resuming by MLflow run id: `from_run=<id>`, `ckpt_path=<id>`, `train.resume=<id>`.

The end-to-end tests share one recorded run, made in a git repository in a temporary directory, and
run the real `hyrax-run` against the real SQLite store it wrote.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hyraxtest import metric_history, mlflow_runs, ok, run_dirs, run_hyrax, user_error
from omegaconf import OmegaConf

from hyrax import rerun, run_lookup, tags
from hyrax.errors import HyraxError

SMALL = ["train.epochs=1", "data_set.n_samples=200", "train.tensorboard=false", "mlflow.system_metrics=false"]
RECORDED = ["model.hidden=8", "model.depth=1", "optimizer.lr=0.01", "mlflow.log_checkpoint=true", *SMALL]
IGNORED = "runs/\nmultiruns/\nmlartifacts/\nmlflow.db*\n.hyrax/\n"


# --- values in Hydra's override grammar -------------------------------------------------------------

_TYPED = {"null", "true", "false", "nan", "inf"}
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text().filter(lambda s: "${" not in s)  # an interpolation is carried as written: see below
)
_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True).filter(
    lambda k: k.lower() not in _TYPED
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


def _applied(overrides: list[str]) -> dict[str, Any]:
    """What Hydra's composition makes of value overrides (the step `compose` runs after the defaults)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.create({"x": None})
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(overrides), cfg)
    return OmegaConf.to_container(cfg, resolve=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_a_rendered_value_composes_back_to_itself(value):
    assert rerun._same(_applied([f"++x={rerun.render(value)}"])["x"], value), rerun.render(value)


TRICKY = [
    None,
    True,
    0,
    -7,
    10**30,
    1e-05,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "null",
    "1e-3",
    "it's",
    'say "hi"',
    "back\\",
    "\\'",
    "a,b=c:d [e] {f}",
    "${oc.env:HOME}",
    "a\\${b}",
    "ünï cødé\nline",
    [],
    {},
    [1, "two", [None, {}]],
    {"a": {"b": [1.5, "x"]}, "c_d-e": {}},
]


def test_tricky_values_compose_back_with_the_real_config():
    composed = rerun.compose([f"++model.v{i}={rerun.render(v)}" for i, v in enumerate(TRICKY)])
    for i, value in enumerate(TRICKY):
        assert rerun._same(composed["model"][f"v{i}"], value), (value, composed["model"][f"v{i}"])


# --- the config a re-run composes ------------------------------------------------------------------


def test_diff_overrides_rebuild_a_record_that_todays_configs_no_longer_give(caplog):
    base = ["model=cnn", "optimizer.lr=0.01"]
    record = rerun.compose(base)
    record["model"]["channels"] = 3  # the conf file's default changed since
    del record["model"]["depth"]  # a key the conf file gained since
    record["model"]["hidden"] = [1, 2]
    record["model"]["opts"] = {"null": 1, "x": {}, "y": [{"a": None}]}  # keys a {k:v} value cannot hold
    record["mlflow"]["tags"] = {"team": "vision"}
    record["optimizer"]["lr"] = 0.02
    del record["train"]["tensorboard"]  # a setting added to Hyrax since: today's default stays
    del record["model"]["num_outputs"]  # null today: Hydra cannot remove it, so it stays
    with caplog.at_level(logging.WARNING, logger="hyrax"):
        diff = rerun.config_diff(rerun.compose(base), record, set(rerun.NOT_COPIED))
    assert "~model.depth" in diff and "model.num_outputs" in caplog.text
    again = rerun.compose([*base, *diff])
    assert again["train"].pop("tensorboard") is True and again["model"].pop("num_outputs") is None
    assert rerun._same(again, record)

    for bad, where in (({"a b": 1}, "'model.a b'"), ({"opts": [{"null": 1}]}, "'model.opts'")):
        with pytest.raises(HyraxError) as err:
            rerun.config_diff(rerun.compose(base), {**record, "model": {**record["model"], **bad}}, set())
        assert err.value.key == "from_run" and where in err.value.message


def test_a_new_group_choice_replaces_the_recorded_group_and_what_it_implies():
    recorded_overrides = ["data_set=synthetic_regression", "model=linear", "model.bias=false", "train.seed=7"]
    record = rerun.compose(recorded_overrides)
    assert record["criterion"]["_target_"] == "torch.nn.MSELoss"  # chosen by the data set itself
    again = rerun.compose(rerun.replay(record, recorded_overrides, [], "config"))
    assert rerun._same(again, record)

    data = rerun.compose(
        rerun.replay(record, recorded_overrides, ["data_set=synthetic_classification"], "config")
    )
    assert data["criterion"]["_target_"] == "torch.nn.CrossEntropyLoss"  # the new data set's own
    assert data["model"] == record["model"] and data["train"]["seed"] == 7

    overrides = rerun.replay(record, recorded_overrides, ["model=mlp", "optimizer.lr=0.5"], "config")
    assert "model.bias=false" not in overrides
    model = rerun.compose(overrides)
    assert model["model"] == rerun.compose(["model=mlp"])["model"]
    assert model["criterion"] == record["criterion"] and model["optimizer"]["lr"] == 0.5


def test_values_not_copied_from_the_record():
    recorded_overrides = ["train.resume=/old/run", "mlflow.parent_run_id=abc", "from_run_allow_drift=true"]
    record = rerun.compose([*recorded_overrides, "mlflow.tracking_uri=sqlite:///elsewhere.db"])
    again = rerun.compose(rerun.replay(record, recorded_overrides, [], "config"))
    assert again["train"]["resume"] == "none" and again["mlflow"]["parent_run_id"] is None
    assert again["from_run_allow_drift"] is False and again["mlflow"]["tracking_uri"] is None


def test_bad_run_ids_and_missing_stores_are_user_errors(tmp_path):
    with pytest.raises(HyraxError) as err:
        run_lookup.open_run("not-a-run", f"sqlite:///{tmp_path}/mlflow.db", "from_run")
    assert err.value.key == "from_run" and "32 hexadecimal" in err.value.message
    with pytest.raises(HyraxError) as err:
        run_lookup.open_run("a" * 32, f"sqlite:///{tmp_path}/mlflow.db", "ckpt_path")
    assert err.value.key == "ckpt_path" and "no MLflow store" in err.value.message
    assert not (tmp_path / "mlflow.db").exists()
    assert run_lookup.names_run("a" * 32, tmp_path) and not run_lookup.names_run("runs/x", tmp_path)
    (tmp_path / ("b" * 32)).mkdir()
    assert not run_lookup.names_run("b" * 32, tmp_path)  # a directory of that name is a path


class _Record:
    """A stand-in for a recorded run that has only a requirements.txt artifact."""

    id = "c" * 32

    def __init__(self, requirements: str) -> None:
        self.requirements = requirements

    def artifact_text(self, name: str) -> str | None:
        return self.requirements if name == tags.REQUIREMENTS_FILE else None


def test_changed_packages_are_a_warning_naming_the_first_few(caplog):
    from hyrax.provenance import requirements

    lines = requirements().splitlines()
    changed = [f"{line.split('==')[0]}==0.0.1" for line in lines[:7]] + lines[7:]
    with caplog.at_level(logging.WARNING, logger="hyrax"):
        run_lookup.warn_changed_packages(_Record("\n".join(changed)))
    assert "installed packages differ" in caplog.text and "and 2 more" in caplog.text
    caplog.clear()
    run_lookup.warn_changed_packages(_Record(requirements()))
    assert caplog.text == ""


# --- end to end ------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _config(run_dir: Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=False)


def _run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "hyrax_run.json").read_text())["mlflow_run_id"]


def _new_dir(repo: Path, before: list[Path]) -> Path:
    [made] = [d for d in run_dirs(repo) if d not in before]
    return made


def _differences(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return rerun._changed_paths(a, b)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    """A git repository with one committed file and one training run launched there: (repo, run dir)."""
    repo = tmp_path_factory.mktemp("project")
    (repo / ".gitignore").write_text(IGNORED)
    (repo / "train.sh").write_text("hyrax-run\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    ok(run_hyrax(RECORDED, repo))
    [run_dir] = run_dirs(repo)
    return repo, run_dir


@pytest.mark.slow
def test_rerun_composes_the_recorded_config_exactly(recorded, monkeypatch):
    repo, run_dir = recorded
    run_id, before = _run_id(run_dir), run_dirs(repo)
    again = ok(run_hyrax([f"from_run={run_id}"], repo))
    new_dir = _new_dir(repo, before)
    assert _differences(_config(run_dir), _config(new_dir)) == {"from_run"}
    assert _config(new_dir)["from_run"] == run_id
    assert "[WARNING]" not in again.stderr, again.stderr  # the same commit, the same packages
    runs = {r.info.run_id: r for r in mlflow_runs(repo)}
    [new_run] = [r for r in runs.values() if r.data.tags.get(tags.RUN_DIR) == str(new_dir.resolve())]
    assert new_run.info.run_id != run_id and new_run.data.tags[tags.FROM_RUN] == run_id

    # The Python API composes the same config (and the in-process session finds the same store).
    from hyrax import Hyrax

    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    session = Hyrax(overrides=[f"from_run={run_id}"])
    assert _differences(_config(run_dir), {**session.config}) == {"from_run"}

    with pytest.raises(HyraxError) as err:
        Hyrax(overrides=[f"from_run={'f' * 32}"])
    assert err.value.key == "from_run" and "has no run" in err.value.message
    assert "mlflow.tracking_uri" in err.value.fix
    before = run_dirs(repo)
    user_error(run_hyrax(["from_run=1234"], repo), "Error in from_run", "32 hexadecimal")
    assert run_dirs(repo) == before


@pytest.mark.slow
def test_fork_after_a_commit_and_run_ids_as_checkpoint_and_resume(recorded):
    repo, run_dir = recorded
    run_id, first = _run_id(run_dir), _git(repo, "rev-parse", "HEAD")
    (repo / "train.sh").write_text("hyrax-run model=linear\n")
    _git(repo, "commit", "-q", "-am", "second")
    try:
        before = run_dirs(repo)
        refused = user_error(run_hyrax([f"from_run={run_id}"], repo), "Error in from_run_allow_drift")
        assert first[:7] in refused and _git(repo, "rev-parse", "--short=7", "HEAD") in refused
        assert f"git checkout {first[:12]}" in refused and run_dirs(repo) == before

        fork = ok(
            run_hyrax(
                [f"from_run={run_id}", "from_run_allow_drift=true", "optimizer.lr=0.05", "model=linear"], repo
            )
        )
        assert "running anyway" in fork.stderr
        fork_dir = _new_dir(repo, before)
        old, new = _config(run_dir), _config(fork_dir)
        changed = {p for p in _differences(old, new) if not p.startswith("model.")}
        assert changed == {"from_run", "from_run_allow_drift", "optimizer.lr"}
        assert new["model"] == rerun.compose(["model=linear"])["model"] and new["optimizer"]["lr"] == 0.05
        fork_id = _run_id(fork_dir)

        store = f"sqlite:///{repo}/mlflow.db"  # ckpt_path=<id> of a run whose directory is here: its best.pt
        assert (
            run_lookup.checkpoint_of(fork_id, store, repo) == fork_dir.resolve() / "checkpoints" / "best.pt"
        )

        resumed = ok(
            run_hyrax([f"train.resume={fork_id}", "model=linear", *SMALL[1:], "train.epochs=2"], repo)
        )
        assert "epoch 2/2" in resumed.stdout and "epoch 1/2" not in resumed.stdout
        assert torch.load(fork_dir / "checkpoints" / "last.pt", weights_only=False)["loop"]["epoch"] == 2
        assert len(metric_history(repo, fork_id, "train/loss")) == 2  # the same MLflow run, continued

        shutil.rmtree(fork_dir)  # gone from this machine; its best.pt was logged (mlflow.log_checkpoint)
        fetched = ok(run_hyrax([f"from_run={fork_id}", "verb=test", f"ckpt_path={fork_id}"], repo))
        download = repo / ".hyrax" / "runs" / fork_id / "checkpoints" / "best.pt"
        assert download.is_file() and f"Using checkpoint {download.resolve()}" in fetched.stdout
        assert "test/accuracy=" in fetched.stdout
    finally:
        _git(repo, "reset", "-q", "--hard", first)
