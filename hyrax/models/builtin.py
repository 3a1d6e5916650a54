"""Built-in models: `mlp` (default), `cnn` and `linear`. Input and output sizes come from the data."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from hyrax.models import hyrax_model


def sample_inputs(data_sample: Any) -> torch.Tensor:
    """The model-input part of a data sample: the tensor itself, or `x` of an `(x, y)` pair."""
    return data_sample[0] if isinstance(data_sample, (tuple, list)) else data_sample


def _require_outputs(num_outputs: Optional[int], name: str) -> int:
    if num_outputs is None:
        from hyrax.errors import HyraxError

        raise HyraxError(
            f"{name} cannot tell how many outputs it needs: the data set has no labels to count",
            key="model.num_outputs",
            fix="set model.num_outputs=N",
        )
    return num_outputs


@hyrax_model
class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs."""

    def __init__(self, data_sample: Any, hidden: int = 64, depth: int = 2, dropout: float = 0.0,
                 num_outputs: Optional[int] = None) -> None:
        super().__init__()
        in_features = sample_inputs(data_sample)[0].numel()
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(in_features, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = hidden
        layers.append(nn.Linear(in_features, _require_outputs(num_outputs, "MLP")))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@hyrax_model
class CNN(nn.Module):
    """A small convolutional network for images shaped (channels, height, width) or (height, width)."""

    def __init__(self, data_sample: Any, channels: int = 16, depth: int = 2, hidden: int = 64,
                 num_outputs: Optional[int] = None) -> None:
        super().__init__()
        item = sample_inputs(data_sample)[0]
        self.add_channel = item.dim() == 2
        in_channels = 1 if self.add_channel else item.shape[0]
        blocks: list[nn.Module] = []
        for i in range(depth):
            blocks += [nn.Conv2d(in_channels, channels * 2**i, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels = channels * 2**i
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(),
                                  nn.Linear(hidden, _require_outputs(num_outputs, "CNN")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.head(self.features(x))


@hyrax_model
class Linear(nn.Module):
    """A single linear layer over flattened inputs (logistic or linear regression)."""

    def __init__(self, data_sample: Any, num_outputs: Optional[int] = None, bias: bool = True) -> None:
        super().__init__()
        in_features = sample_inputs(data_sample)[0].numel()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, _require_outputs(num_outputs, "Linear"),
                                                         bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
