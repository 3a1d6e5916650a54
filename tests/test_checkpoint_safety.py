"""Checkpoints load with `weights_only=True`: ours (new and older) load and resume, a pickle payload is
refused with one message and never runs."""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hyraxtest import user_error

from hyrax import Hyrax, HyraxError
from hyrax.train import checkpoint

QUIET = ["mlflow.enabled=false", "train.progress=false", "data_set.n_samples=400"]


class Payload:
    """Pickles as a call of `action(*args)`: unpickling it would run that call."""

    def __init__(self, action, *args) -> None:
        self.action, self.args = action, args

    def __reduce__(self):
        return self.action, self.args


def write_payload(path: Path, action, *args) -> Path:
    """A .pt whose loading with `weights_only=False` runs `action(*args)`."""
    torch.save({"model": {}, "x": Payload(action, *args)}, path)
    return path


def global_name(action) -> str:
    """How pickle names a function, e.g. `posix.system` for `os.system` on Linux."""
    return f"{action.__module__}.{action.__qualname__}"


def last(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two real trainings: 4 epochs straight, and 2 epochs (to resume from)."""
    where = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        dirs = {}
        for name, epochs in (("straight", 4), ("half", 2)):
            h = Hyrax(overrides=[*QUIET, f"train.epochs={epochs}"])
            h.train()
            dirs[name] = h.last_run_dir
    return dirs


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def resume_to_4_epochs(run_dir: Path, caplog) -> Path:
    """Resume a 2-epoch run to 4 epochs in this process; returns the run directory it wrote to."""
    caplog.set_level(logging.INFO, logger="hyrax")
    h = Hyrax(overrides=[*QUIET, "train.epochs=4", f"train.resume={run_dir}"])
    h.train()
    assert "epoch 3/4" in caplog.text and "epoch 1/4" not in caplog.text
    return h.last_run_dir


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert left.keys() == right.keys()
    assert all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.slow
def test_a_trained_checkpoint_loads_weights_only_and_resumes_exactly(runs, in_tmp, caplog):
    for name in ("straight", "half"):
        for kind in (checkpoint.LAST, checkpoint.BEST):
            state = torch.load(runs[name] / "checkpoints" / kind, weights_only=True)
            assert {"model", "optimizer", "loop", "rng", "config", "mlflow_run_id"} <= state.keys()
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last(runs["half"])) == []
    copy = shutil.copytree(runs["half"], in_tmp / "half")

    resumed = resume_to_4_epochs(copy, caplog)

    assert resumed == copy
    state = torch.load(last(copy), weights_only=True)
    assert state["loop"]["epoch"] == 4
    assert state["loop"]["step"] == torch.load(last(runs["straight"]), weights_only=True)["loop"]["step"]
    assert_same_weights(last(copy), last(runs["straight"]))  # the loss went on as if never stopped


def test_rng_states_are_plain_data_and_restore():
    states = checkpoint.rng_states()
    name, key, *_ = states["numpy"]
    assert name == "MT19937" and isinstance(key, list) and len(key) == 624
    drawn = (random.random(), np.random.rand(), torch.rand(3))
    checkpoint.restore_rng(states)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


def old_layout(path: Path) -> None:
    """Rewrite a checkpoint as Hyrax wrote it before: numpy's RNG state as `np.random.get_state()`
    gives it, a tuple holding a uint32 array."""
    state = torch.load(path, weights_only=True)
    name, key, pos, has_gauss, gauss = state["rng"]["numpy"]
    state["rng"]["numpy"] = (name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss)
    torch.save(state, path)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):  # only our allow-list lets it load
        torch.load(path, weights_only=True)


def test_an_older_checkpoint_loads_without_allowing_numpy_for_the_process(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(
        {
            "model": {"w": torch.ones(2)},
            "loop": {"epoch": 3},
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
            "config": {"model": {"_target_": "x.Y"}},
            "mlflow_run_id": None,
        },
        path,
    )
    state = checkpoint.load(path)
    assert state["loop"]["epoch"] == 3 and isinstance(state["rng"]["numpy"][1], np.ndarray)
    checkpoint.restore_rng(state["rng"])
    assert np.ndarray not in torch.serialization.get_safe_globals()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


@pytest.mark.slow
def test_an_older_checkpoint_resumes_exactly_and_infers(runs, in_tmp, caplog):
    copy = shutil.copytree(runs["half"], in_tmp / "half")
    for kind in (checkpoint.LAST, checkpoint.BEST):
        old_layout(copy / "checkpoints" / kind)

    predictions = Hyrax(overrides=QUIET).infer(ckpt_path=str(copy)).predictions
    assert predictions.shape == (400, 4) and np.isfinite(predictions).all()

    resume_to_4_epochs(copy, caplog)
    assert torch.load(last(copy), weights_only=True)["loop"]["epoch"] == 4
    assert_same_weights(last(copy), last(runs["straight"]))


@pytest.mark.parametrize("key", ["ckpt_path", "train.resume"])
def test_load_refuses_a_payload_and_runs_none_of_it(tmp_path, key):
    marker = tmp_path / "marker"
    path = write_payload(tmp_path / "evil.pt", open, str(marker), "w")
    with pytest.raises(HyraxError) as caught:
        checkpoint.load(path, key=key)
    assert caught.value.key == key
    assert "holds code or objects Hyrax does not load" in caught.value.message
    assert global_name(open) in caught.value.message
    assert "weights_only=False" in caught.value.fix and "hyrax-run" in caught.value.fix
    assert not marker.exists()

    torch.load(path, weights_only=False)["x"].close()  # the payload is live: an unsafe load runs it
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["verb=infer", "ckpt_path={path}"], "ckpt_path"),
        (["train.epochs=1", "train.resume={path}"], "train.resume"),
    ],
)
def test_hyrax_run_refuses_a_payload_before_anything_runs(hyrax_run, tmp_path, args, key):
    marker = tmp_path / "marker"
    path = write_payload(tmp_path / "evil.pt", os.system, f"touch {marker}")

    proc = hyrax_run(*QUIET, *(a.format(path=path) for a in args))

    user_error(proc, f"Error in {key}", global_name(os.system), "holds code or objects", "Fix:")
    assert not marker.exists()
    assert "epoch 1/" not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("**/checkpoints"))


def test_save_refuses_state_that_could_not_be_loaded_again(tmp_path):
    state = {"model": {"w": torch.ones(1), "extra": Payload(print, "hi")}, "loop": {"epoch": 1}}
    with pytest.raises(HyraxError) as caught:
        checkpoint.save(tmp_path / "checkpoints" / "last.pt", state)
    assert caught.value.key == "model" and global_name(print) in caught.value.message
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_file_that_is_not_a_checkpoint_is_unreadable(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.ones(1)}, tmp_path / "bare.pt")
    for name in ("text.pt", "bare.pt"):
        with pytest.raises(HyraxError, match="cannot read checkpoint") as caught:
            checkpoint.load(tmp_path / name)
        assert caught.value.key == "ckpt_path"
