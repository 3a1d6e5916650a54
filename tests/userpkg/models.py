"""User models: one per style of the contract, plus broken ones for the error tests."""

import numpy as np
import torch
from torch import nn

from hyrax.models import hyrax_model


@hyrax_model
class TelescopeNet(nn.Module):
    """Docs style: __init__(config, data_sample), to_tensor packing dict items, default training step."""

    def __init__(self, config, data_sample):
        super().__init__()
        x, _ = data_sample
        self.seen_config = config
        self.net = nn.Sequential(nn.Linear(x.shape[0], 16), nn.ReLU(), nn.Linear(16, 3))

    @staticmethod
    def to_tensor(data_dict):
        import numpy as np

        data = data_dict["data"]
        x = np.concatenate([np.array(data["flux_g"]), np.array(data["flux_r"])], axis=1)
        return x, np.array(data["label"])

    def forward(self, x):
        return self.net(x)


@hyrax_model
class StepNet(nn.Module):
    """Older docs style: __init__(config, shape) and its own train_step using self.optimizer/criterion."""

    def __init__(self, config, shape, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(shape[0], width), nn.ReLU(), nn.Linear(width, 3))

    def forward(self, x):
        return self.net(x)

    def train_step(self, batch):
        x, y = batch
        self.optimizer.zero_grad()
        loss = self.criterion(self(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "grad_seen": 1.0}


class PlainNet(nn.Module):
    """A plain nn.Module built from keyword arguments, trained by the default step."""

    def __init__(self, in_features: int = 8, hidden: int = 16, classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)


class RenamedNet(PlainNet):
    """Current Hyrax spelling: train_batch and prepare_inputs."""

    @staticmethod
    def prepare_inputs(data_dict):
        data = data_dict["data"]
        x = np.concatenate([np.array(data["flux_g"]), np.array(data["flux_r"])], axis=1)
        return x, np.array(data["label"])

    def train_batch(self, batch):
        x, y = batch
        self.optimizer.zero_grad()
        loss = self.criterion(self(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss}


class NoLossNet(PlainNet):
    """train_step forgets the 'loss' key."""

    def train_step(self, batch):
        return {"error": 1.0}


class NanNet(PlainNet):
    """Trains normally, then its loss turns NaN after `nan_after` steps."""

    def __init__(self, nan_after: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.nan_after, self.steps = nan_after, 0

    def train_step(self, batch):
        x, y = batch
        self.steps += 1
        self.optimizer.zero_grad()
        loss = self.criterion(self(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss if self.steps <= self.nan_after else torch.tensor(float("nan"))}


class CrashNet(PlainNet):
    """A bug in the user's own forward."""

    def forward(self, x):
        return helper_that_divides(x)


def helper_that_divides(x):
    return x.sum() / 0 if x is None else 1 / 0


class ListLossNet(PlainNet):
    """Old docs style: train_step returns per-item losses as a list; own validate_step and infer_batch."""

    def train_step(self, batch):
        x, y = batch
        self.optimizer.zero_grad()
        losses = nn.functional.cross_entropy(self(x), y, reduction="none")
        losses.mean().backward()
        self.optimizer.step()
        return {"loss": [v for v in losses.detach()]}

    def validate_step(self, batch):
        x, y = batch
        return {
            "loss": nn.functional.cross_entropy(self(x), y),
            "top1": (self(x).argmax(1) == y).float().mean(),
        }

    def infer_batch(self, batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(x), dim=1)


class NotAModel:
    """Not a torch.nn.Module."""

    def __init__(self, width: int = 3):
        self.width = width
