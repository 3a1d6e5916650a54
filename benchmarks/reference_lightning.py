"""The reference task of `whole_process.py` under Lightning's Trainer, logging to MLflow with MLFlowLogger.

The same training as `reference_by_hand.py` (MLP 784-256-10, Adam lr 1e-3, cross entropy, a seeded
80/10/10 split by index, shuffled batches gathered by indexing the whole tensors, validation every
epoch, test metrics at the end), written as a LightningModule; the Trainer keeps its defaults
(checkpointing the last epoch, a model summary) but shows no progress bar.

    python benchmarks/reference_lightning.py --data x.npz --tracking-uri sqlite:///mlflow.db --epochs 3
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SubsetRandomSampler


class Rows(Dataset):
    """Whole batches of rows of the tensors: `rows[[3, 7, 9]]` is `(x[[3, 7, 9]], y[[3, 7, 9]])`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(rows)
        return self.x[index], self.y[index]


def loader(rows: Rows, idx: torch.Tensor, batch: int, shuffle: bool) -> DataLoader:
    """Batches of the items `idx` (shuffled each epoch when asked), each gathered in one indexing."""
    if shuffle:
        sampler: Any = BatchSampler(SubsetRandomSampler(idx.tolist()), batch, drop_last=False)
    else:
        sampler = [part.tolist() for part in idx.split(batch)]
    return DataLoader(rows, sampler=sampler, batch_size=None)


class Classifier(pl.LightningModule):
    """The MLP with its loss, metrics and optimizer."""

    def __init__(self, features: int, hidden: int, classes: int, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        x, y = batch
        out = self(x)
        self.log(f"{split}/loss", self.loss_fn(out, y), batch_size=len(x))
        self.log(f"{split}/accuracy", (out.argmax(dim=1) == y).float().mean(), batch_size=len(x))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    pl.seed_everything(args.seed, verbose=False)
    with np.load(args.data) as arrays:
        x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    n = len(x)
    order = torch.from_numpy(np.random.default_rng(args.seed).permutation(n))
    n_val, n_test = round(0.1 * n), round(0.1 * n)
    train_idx, val_idx, test_idx = order.split([n - n_val - n_test, n_val, n_test])
    rows = Rows(x, y)
    model = Classifier(x[0].numel(), args.hidden, int(y.max()) + 1, args.lr)
    logger = MLFlowLogger(experiment_name="reference", run_name="lightning", tracking_uri=args.tracking_uri)
    logger.log_hyperparams({"batch_size": args.batch_size, "epochs": args.epochs, "data": str(args.data)})
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_progress_bar=False,
        default_root_dir=".",
    )
    trainer.fit(
        model,
        loader(rows, train_idx, args.batch_size, shuffle=True),
        loader(rows, val_idx, args.batch_size, shuffle=False),
    )
    trainer.test(model, loader(rows, test_idx, args.batch_size, shuffle=False), verbose=True)


if __name__ == "__main__":
    main()
