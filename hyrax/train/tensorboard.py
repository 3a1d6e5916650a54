"""TensorBoard event files of a run (`train.tensorboard`): the metrics MLflow gets, at the same steps.

    board = TensorBoard.open(run_dir)            # <run dir>/tensorboard/events.out.tfevents.*
    board.log({"train/loss": 0.41, "lr": 1e-3}, step=120)
    board.close()

`tensorboard --logdir runs` then shows every run. Without an importable TensorBoard writer the log
warns once and the writer does nothing, so a run never fails for want of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("hyrax")
SUBDIR = "tensorboard"
_warned = False


class TensorBoard:
    """Scalars written to TensorBoard event files, or nothing when TensorBoard is not installed."""

    def __init__(self, writer: Any, folder: Path | None) -> None:
        self.writer, self.folder = writer, folder

    @classmethod
    def open(cls, run_dir: Path) -> TensorBoard:
        """A writer of event files in `<run_dir>/tensorboard/` (a no-op writer without TensorBoard)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            _warn_once(err)
            return cls(None, None)
        folder = Path(run_dir) / SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        return cls(SummaryWriter(log_dir=str(folder), flush_secs=30), folder)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Write each metric as a scalar under its own name (`train/loss`, `val/accuracy`, `lr`)."""
        if self.writer is None:
            return
        for name, value in metrics.items():
            number = _number(value)
            if number is not None:
                self.writer.add_scalar(name, number, global_step=int(step))

    def flush(self) -> None:
        """Write what is buffered to disk now."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file (safe to call twice)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _number(value: Any) -> float | None:
    """A metric as a float (tensors and numpy scalars too); None for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _warn_once(err: ImportError) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "train.tensorboard: TensorBoard cannot be imported (%s), so no event files are written; "
            "pip install tensorboard, or set train.tensorboard=false",
            err,
        )
