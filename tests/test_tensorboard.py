"""TensorBoard event files (`train.tensorboard`): the scalars written are the ones read back, at their
steps; without TensorBoard the writer warns once and does nothing.

The end-to-end check (a training run's event files hold the same metrics and steps as its MLflow run)
belongs with the training loop that calls this writer.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from hyrax.train import tensorboard
from hyrax.train.tensorboard import TensorBoard


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of `folder`, as (step, value) pairs in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_scalars_and_steps_read_back(tmp_path):
    board = TensorBoard.open(tmp_path)
    assert board.folder == tmp_path / "tensorboard"
    board.log({"train/loss_step": 1.5}, step=10)
    board.log({"train/loss": 1.25, "val/loss": 1.5, "lr": 1e-3}, step=16)
    board.log({"train/loss_step": 0.75}, step=20)
    board.log({"train/loss": torch.tensor(0.5), "val/loss": np.float32(0.625), "lr": 5e-4}, step=32)
    board.close()
    board.close()  # a second close does nothing

    scalars = read_scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"train/loss", "train/loss_step", "val/loss", "lr"}
    assert scalars["train/loss"] == [(16, 1.25), (32, 0.5)]
    assert scalars["train/loss_step"] == [(10, 1.5), (20, 0.75)]
    assert scalars["val/loss"] == [(16, 1.5), (32, 0.625)]
    assert [s for s, _ in scalars["lr"]] == [16, 32]
    assert scalars["lr"][0][1] == pytest.approx(1e-3) and scalars["lr"][1][1] == pytest.approx(5e-4)


def test_values_that_are_not_numbers_are_left_out(tmp_path):
    board = TensorBoard.open(tmp_path)
    board.log({"train/loss": 2.0, "note": "not a number", "nothing": None}, step=1)
    board.close()
    assert read_scalars(tmp_path / "tensorboard") == {"train/loss": [(1, 2.0)]}


def test_without_tensorboard_one_warning_and_a_writer_that_does_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it now fails
    monkeypatch.setattr(tensorboard, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="hyrax"):
        first, second = TensorBoard.open(tmp_path / "a"), TensorBoard.open(tmp_path / "b")
    for board in (first, second):
        board.log({"train/loss": 1.0}, step=1)
        board.flush()
        board.close()
    warnings = [r for r in caplog.records if "train.tensorboard" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "pip install tensorboard" in warnings[0].getMessage()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
