"""LightningModules for data-parallel runs: they log epoch metrics averaged over the ranks
(`sync_dist=True`, as Lightning recommends under DDP) and note, after every training epoch, a checksum
of their weights and the number of batches they trained on, in files named by rank in the folder
`HYRAX_TEST_OUT` names (as tests/ddppkg does), so a test can compare the ranks."""

import os
from pathlib import Path

import torch

from lightningpkg.modules import Classifier, Regressor


def note_epoch(module) -> None:
    """Append `epoch batches checksum` to weights_rank<global rank>.txt (when HYRAX_TEST_OUT is set)."""
    out = os.environ.get("HYRAX_TEST_OUT")
    if not out:
        return
    flat = torch.cat([p.detach().double().flatten() for p in module.parameters()])
    checksum = float(flat @ torch.arange(1, len(flat) + 1, dtype=torch.float64))
    batches = module.trainer.num_training_batches
    with open(Path(out) / f"weights_rank{module.global_rank}.txt", "a") as f:
        f.write(f"{module.current_epoch} {batches} {checksum!r}\n")


class SyncedClassifier(Classifier):
    """`Classifier` with its epoch metrics averaged over the ranks."""

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, accuracy = self._loss(batch)
        self.log_dict({"val/loss": loss, "val/accuracy": accuracy}, sync_dist=True)

    def test_step(self, batch, batch_idx):
        loss, accuracy = self._loss(batch)
        self.log_dict({"test/loss": loss, "test/accuracy": accuracy}, sync_dist=True)

    def on_train_epoch_end(self):
        note_epoch(self)


class SyncedRegressor(Regressor):
    """`Regressor` (for a LightningDataModule) with its epoch metrics averaged over the ranks."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y), sync_dist=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y), sync_dist=True)

    def on_train_epoch_end(self):
        note_epoch(self)
