"""A Flash-style task (seed 002): the base task owns the steps and the optimizer; a subclass only says
which network, loss and optimizer class, through its constructor. And a container (seed 004) that
builds the task and its data module."""

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from lightningpkg.modules import LinearData


class Task(pl.LightningModule):
    """Like flash.Task: training_step, validation_step and test_step share `step`."""

    def __init__(self, model: nn.Module, loss_fn: Any, optimizer: type, learning_rate: float = 1e-3):
        super().__init__()
        self.model, self.loss_fn, self.optimizer_cls = model, loss_fn, optimizer
        self.learning_rate = learning_rate

    def step(self, batch: Any, batch_idx: int, prefix: str) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log(f"{prefix}_loss", loss, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.step(batch, batch_idx, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, batch_idx, "test")

    def configure_optimizers(self):
        return self.optimizer_cls(self.parameters(), lr=self.learning_rate)


class RegressionTask(Task):
    """The seed's RegressionTask: only __init__ and forward."""

    def __init__(self, num_inputs: int, learning_rate: float = 0.001, metrics: Any = None):
        super().__init__(
            model=nn.Linear(num_inputs, 1),
            loss_fn=nn.functional.mse_loss,
            optimizer=torch.optim.SGD,
            learning_rate=learning_rate,
        )
        self.save_hyperparameters()

    def forward(self, x):
        return self.model(x).squeeze(-1)


class RegressionContainer:
    """Builds the task and its data (InnerEye's LightningContainer pattern); its parameters are model.*."""

    def __init__(self, learning_rate: float = 0.05, n: int = 512, epochs: int = 2):
        self.learning_rate, self.n, self.epochs = learning_rate, n, epochs

    def create_model(self) -> pl.LightningModule:
        return RegressionTask(num_inputs=8, learning_rate=self.learning_rate)

    def get_data_module(self) -> pl.LightningDataModule:
        return LinearData(n=self.n, n_features=8)

    def get_trainer_arguments(self) -> dict[str, Any]:
        return {"max_epochs": self.epochs}
