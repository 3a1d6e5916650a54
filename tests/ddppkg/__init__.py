"""Models and data sets that let data-parallel tests see what each rank did.

Each writes to files named by its rank in the folder `HYRAX_TEST_OUT` names: the sample positions a
rank trained on, and a checksum of the weights every time the model is evaluated.
"""

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from hyrax.data_sets import HyraxDataset


def rank() -> int:
    """This process's rank (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _note(kind: str, text: str) -> None:
    out = os.environ.get("HYRAX_TEST_OUT")
    if out:
        with open(Path(out) / f"{kind}_rank{rank()}.txt", "a") as f:
            f.write(text + "\n")


def checksum(model: nn.Module) -> str:
    """Every weight, position-weighted, as one exact number: two ranks agree only if all weights do."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    return repr(float(flat @ torch.arange(1, len(flat) + 1, dtype=torch.float64)))


def _item(i: int) -> tuple[np.ndarray, int]:
    label = i % 3
    rng = np.random.default_rng(i)
    x = (rng.normal(size=4) + 2.0 * label).astype(np.float32)
    return np.concatenate([[np.float32(i)], x]), label  # column 0: the item's position


class IndexedData(HyraxDataset, Dataset):
    """Map-style items (x, label) whose first input column is the item's position."""

    def __init__(self, config, n: int = 96):
        super().__init__(config)
        self.n = n

    def __getitem__(self, i):
        x, label = _item(i)
        return torch.from_numpy(x), label

    def __len__(self):
        return self.n


class IndexedStream(HyraxDataset, IterableDataset):
    """The same items as a stream of unknown length."""

    def __init__(self, config, n: int = 96):
        super().__init__(config)
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            x, label = _item(i)
            yield torch.from_numpy(x), label


class PositionNet(nn.Module):
    """Its own train_step (stepping its optimizer, as Hyrax models do) notes the positions it trained
    on; evaluating notes the weights' checksum."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, x):
        if not self.training:
            _note("weights", checksum(self))
        return self.net(x[:, 1:])

    def train_step(self, batch):
        x, y = batch
        _note("seen", " ".join(str(int(v)) for v in x[:, 0].tolist()))
        self.optimizer.zero_grad()
        loss = self.criterion(self(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss}


class WeightNet(nn.Module):
    """Trained by Hyrax's default step; evaluating notes the weights' checksum."""

    def __init__(self, in_features: int = 20, hidden: int = 32, classes: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        if not self.training:
            _note("weights", checksum(self))
        return self.net(x)


class RankCrash(PositionNet):
    """Raises in its train_step on rank `crash_rank` after a few steps: a bug in user code on one rank."""

    def __init__(self, hidden: int = 16, crash_rank: int = 1):
        super().__init__(hidden)
        self.crash_rank, self.steps = crash_rank, 0

    def train_step(self, batch):
        self.steps += 1
        if rank() == self.crash_rank and self.steps == 3:
            raise ValueError(f"user bug on rank {rank()}")
        return super().train_step(batch)
