"""A model for the debug presets' tests that writes down every batch it is given, by split."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CALLS_FILE = "calls.txt"  # in the working directory: one line per batch, `<split> <items>`


def _note(split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    with Path(CALLS_FILE).open("a") as out:
        out.write(f"{split} {len(batch[0])}\n")


def calls(where: Path) -> dict[str, list[int]]:
    """The batch sizes each split's steps were given in a run started in `where`."""
    found: dict[str, list[int]] = {"train": [], "validate": [], "test": []}
    path = where / CALLS_FILE
    for line in path.read_text().splitlines() if path.is_file() else []:
        split, items = line.split()
        found[split].append(int(items))
    return found


class CallCounter(nn.Module):
    """A linear classifier with its own train, validate and test steps, each noting its batch."""

    def __init__(self, data_sample, num_outputs: int = 4):
        super().__init__()
        self.net = nn.Linear(data_sample[0].shape[0], num_outputs)

    def forward(self, x):
        return self.net(x)

    def train_step(self, batch):
        _note("train", batch)
        x, y = batch
        loss = self.criterion(self(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate_step(self, batch):
        _note("validate", batch)
        x, y = batch
        return {"loss": self.criterion(self(x), y).item()}

    def test_step(self, batch):
        _note("test", batch)
        x, y = batch
        return {"loss": self.criterion(self(x), y).item()}
