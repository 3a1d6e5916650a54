"""Built-in models: `mlp` (default), `cnn` and `linear`. Input and output sizes come from the data:
`shape` is the shape of one item's inputs, whatever `train.data_sample` says."""

from __future__ import annotations

import math

import torch
from torch import nn

from hyrax.models import hyrax_model


def _require_outputs(num_outputs: int | None, name: str) -> int:
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

    def __init__(
        self,
        shape: tuple[int, ...],
        hidden: int = 64,
        depth: int = 2,
        dropout: float = 0.0,
        num_outputs: int | None = None,
    ) -> None:
        super().__init__()
        in_features = math.prod(shape)
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

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: int = 16,
        depth: int = 2,
        hidden: int = 64,
        num_outputs: int | None = None,
    ) -> None:
        super().__init__()
        self.add_channel = len(shape) == 2
        in_channels = 1 if self.add_channel else shape[0]
        blocks: list[nn.Module] = []
        for i in range(depth):
            blocks += [nn.Conv2d(in_channels, channels * 2**i, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels = channels * 2**i
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, _require_outputs(num_outputs, "CNN"))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.head(self.features(x))


@hyrax_model
class Linear(nn.Module):
    """A single linear layer over flattened inputs (logistic or linear regression)."""

    def __init__(self, shape: tuple[int, ...], num_outputs: int | None = None, bias: bool = True) -> None:
        super().__init__()
        in_features = math.prod(shape)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, _require_outputs(num_outputs, "Linear"), bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
