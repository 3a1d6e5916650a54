"""Plain LightningModules and a LightningDataModule, in the usual Lightning styles."""

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(pl.LightningModule):
    """Hyrax's names (`train/loss`, `val/loss`), its data_sample, and num_outputs counted from the data."""

    def __init__(self, data_sample, hidden: int = 16, lr: float = 0.02, num_outputs: int | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["data_sample"])
        x, _ = data_sample
        self.net = nn.Sequential(nn.Linear(x.shape[0], hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch):
        x, y = batch
        logits = self(x)
        return nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, accuracy = self._loss(batch)
        self.log_dict({"val/loss": loss, "val/accuracy": accuracy})

    def test_step(self, batch, batch_idx):
        loss, accuracy = self._loss(batch)
        self.log_dict({"test/loss": loss, "test/accuracy": accuracy})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class Regressor(pl.LightningModule):
    """Lightning's usual names (`train_loss`, `val_loss`, `test_loss`) and hyperparameters of its own."""

    def __init__(self, n_features: int = 8, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(n_features, 1)

    def forward(self, x):
        return self.layer(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.9)}


class LinearData(pl.LightningDataModule):
    """A noisy linear target, split into train, validate and test loaders."""

    def __init__(self, n: int = 512, n_features: int = 8, batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.n, self.n_features, self.batch_size, self.seed = n, n_features, batch_size, seed

    def setup(self, stage=None):
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.n, self.n_features, generator=generator)
        y = x @ torch.linspace(-1, 1, self.n_features) + 0.05 * torch.randn(self.n, generator=generator)
        cut, end = int(self.n * 0.7), int(self.n * 0.85)
        self.parts = {
            "train": TensorDataset(x[:cut], y[:cut]),
            "val": TensorDataset(x[cut:end], y[cut:end]),
            "test": TensorDataset(x[end:], y[end:]),
        }

    def train_dataloader(self):
        return DataLoader(self.parts["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.parts["val"], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.parts["test"], batch_size=self.batch_size)


class NoValidation(Regressor):
    """Trains and logs `train_loss` only: validation measures nothing."""

    validation_step = pl.LightningModule.validation_step
