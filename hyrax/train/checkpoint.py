"""Checkpoints: everything needed to resume a run exactly, written atomically into the run directory.

A checkpoint holds only tensors, numbers, strings, `None` and lists, tuples and dicts of them, so it
is read with `torch.load(..., weights_only=True)`: a file that carries anything else (a pickled
object whose loading would run code) is refused before any of it runs.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyrax.errors import HyraxError

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
# What Lightning's Trainer writes for a LightningModule (see hyrax.train.lightning_run).
LIGHTNING = {LAST: "last.ckpt", BEST: "best.ckpt"}
STATE_KEYS = ("model", "loop")  # what every checkpoint of ours has


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / CHECKPOINT_DIR


def rng_states() -> dict[str, Any]:
    """The random number generator states a resumed run restores, as plain numbers and a tensor."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (str(name), key.tolist(), int(pos), int(has_gauss), float(gauss))
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def restore_rng(states: dict[str, Any]) -> None:
    """Put the generators back as a checkpoint recorded them (numpy's key as a list, or an array in
    checkpoints written before the key was stored as plain numbers)."""
    name, key, pos, has_gauss, gauss = states["numpy"]
    random.setstate(states["python"])
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint so that a crash mid-write never leaves a broken file in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp)
    if unsafe:
        tmp.unlink()
        raise _unsaveable(state, unsafe)
    os.replace(tmp, path)


def _unsaveable(state: dict[str, Any], unsafe: list[str]) -> HyraxError:
    """The error for state that `load` would refuse, naming the part of the checkpoint that holds it."""
    part = next((name for name, value in state.items() if _unsafe_globals(value)), None)
    return HyraxError(
        f"the {part or 'checkpoint'} state holds objects a checkpoint does not carry "
        f"({', '.join(sorted(unsafe))}): Hyrax could not load it again",
        key=part if part in ("model", "optimizer", "scheduler") else None,
        fix="keep only tensors, numbers, strings, lists and dicts in state_dict() and get_extra_state()",
    )


def _unsafe_globals(value: Any) -> list[str]:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.serialization.get_unsafe_globals_in_checkpoint(buffer)


def _older_format_globals() -> list[Any]:
    """What checkpoints written before the numpy RNG state was stored as plain numbers need besides
    tensors: its key, a uint32 `ndarray` rebuilt by `_reconstruct` (named as numpy 1 and 2 pickle it),
    and `dtype` with the uint32 dtype's own class, which unpickling sets the state of."""
    reconstruct = np.empty(0).__reduce__()[0]
    return [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


def load(path: Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Read a checkpoint written by `save` without running anything it holds.

    `key` is the config key that named the file (`ckpt_path`, or `train.resume` when resuming).
    """
    try:
        with torch.serialization.safe_globals(_older_format_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) and re.search(r"GLOBAL \S+", str(err)):
            raise _refused(path, key, str(err)) from None
        raise _unreadable(path, key, err) from err
    except (OSError, RuntimeError, EOFError, KeyError, ValueError) as err:
        raise _unreadable(path, key, err) from err
    if path.suffix == ".ckpt" and isinstance(state, dict) and "state_dict" in state:
        state = _from_lightning(state, path)
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise _unreadable(path, key, "it is not a checkpoint written by hyrax-run (no model and loop state)")
    return state


def _from_lightning(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """A Lightning checkpoint in the shape of ours: its weights as `model`, the epochs it finished as
    `loop`, the MLflow run Hyrax recorded in it, and where it is (`lightning_ckpt`) for the Trainer."""
    hyrax = state.get("hyrax") or {}
    done = hyrax.get("epochs_done", int(state.get("epoch", -1)) + 1)
    return {
        **state,
        "model": state["state_dict"],
        "loop": {"epoch": done},
        "mlflow_run_id": hyrax.get("mlflow_run_id"),
        "lightning_ckpt": str(path),
    }


def _refused(path: Path, key: str, message: str) -> HyraxError:
    """The error for a file holding something `weights_only` loading refuses: it could run code."""
    return HyraxError(
        f"checkpoint {path} holds code or objects Hyrax does not load ({_offender(message)}); "
        "nothing in it was run",
        key=key,
        fix="load only checkpoints written by hyrax-run; if you trust this file, load it yourself with "
        "torch.load(path, weights_only=False) and save its state dicts again as tensors and plain data",
    )


def _offender(message: str) -> str:
    """What torch's weights-only error names: the refused global, else its own short reason."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return found.group(1)
    detail = message.split("WeightsUnpickler error:")[-1]
    lines = [
        line.strip()
        for line in detail.splitlines()
        if line.strip() and "weights_only" not in line and "Weights only" not in line
    ]
    return lines[0] if lines else "not plain data"


def _unreadable(path: Path, key: str, err: BaseException | str) -> HyraxError:
    """The error for a file that is not a checkpoint of ours, or is cut short."""
    if isinstance(err, (OSError, RuntimeError)) and str(err):
        err = str(err).splitlines()[0]
    elif isinstance(err, BaseException):
        err = "it is not a whole file written by torch.save"
    return HyraxError(
        f"cannot read checkpoint {path}: {err}",
        key=key,
        fix="point at a .pt file written by hyrax-run, or at its run directory",
    )


def find(path_or_dir: str | Path, prefer: str = BEST, key: str = "ckpt_path") -> Path:
    """The checkpoint a user named (in `key`): a file, or a run directory (its best, else its last one)."""
    path = Path(path_or_dir).expanduser()
    if path.is_file():
        return path
    folder = checkpoint_dir(path) if (path / CHECKPOINT_DIR).is_dir() else path
    for name in (prefer, LAST, BEST, LIGHTNING[prefer], LIGHTNING[LAST], LIGHTNING[BEST]):
        if (folder / name).is_file():
            return folder / name
    raise HyraxError(
        f"no checkpoint at '{path_or_dir}'",
        key=key,
        fix="give a .pt file or a run directory that has checkpoints/best.pt or last.pt (best.ckpt or "
        "last.ckpt for a LightningModule)",
    )


def resume_source(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint `train.resume` asks to continue from: none, this run's last, or a given path."""
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        found = [checkpoint_dir(run_dir) / name for name in (LAST, LIGHTNING[LAST])]
        return next((last for last in found if last.is_file()), None)
    return find(resume, prefer=LAST, key="train.resume")


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint file belongs to."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
