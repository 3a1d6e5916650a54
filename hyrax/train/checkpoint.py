"""Checkpoints: everything needed to resume a run exactly, written atomically into the run directory."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyrax.errors import HyraxError

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / CHECKPOINT_DIR


def rng_states() -> dict[str, Any]:
    """The random number generator states a resumed run restores."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng(states: dict[str, Any]) -> None:
    """Put the generators back as a checkpoint recorded them."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint so that a crash mid-write never leaves a broken file in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `save`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise HyraxError(
            f"cannot read checkpoint {path}: {err}",
            key="ckpt_path",
            fix="point at a .pt file written by hyrax-run, or at its run directory",
        ) from err


def find(path_or_dir: str | Path, prefer: str = BEST) -> Path:
    """The checkpoint a user named: a file, or a run directory (its best, else its last checkpoint)."""
    path = Path(path_or_dir).expanduser()
    if path.is_file():
        return path
    folder = checkpoint_dir(path) if (path / CHECKPOINT_DIR).is_dir() else path
    for name in (prefer, LAST, BEST):
        if (folder / name).is_file():
            return folder / name
    raise HyraxError(
        f"no checkpoint at '{path_or_dir}'",
        key="ckpt_path",
        fix="give a .pt file or a run directory that has checkpoints/best.pt or last.pt",
    )


def resume_source(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint `train.resume` asks to continue from: none, this run's last, or a given path."""
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        last = checkpoint_dir(run_dir) / LAST
        return last if last.is_file() else None
    return find(resume, prefer=LAST)


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint file belongs to."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
