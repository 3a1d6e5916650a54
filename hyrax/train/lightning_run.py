"""Lightning models run by Lightning's own Trainer, tracked and swept like any Hyrax run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def wants_lightning(config: Mapping[str, Any]) -> bool:
    """Whether the configured model is a `LightningModule` (decided without importing Lightning)."""
    return False


def train(*args: Any, **kwargs: Any) -> Any:
    """Fit with Lightning's Trainer and return a `hyrax.train.run.TrainResult`."""
    raise NotImplementedError
