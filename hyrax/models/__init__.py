"""Model contract: `@hyrax_model` registers a `torch.nn.Module` so it can be named by its class name.

    from hyrax.models import hyrax_model

    @hyrax_model
    class MyModel(torch.nn.Module):
        def __init__(self, config, data_sample, hidden: int = 32): ...
        def forward(self, x): ...

Optional methods Hyrax uses when present: `train_step(batch) -> {"loss": ...}` (or `train_batch`),
`validate_step(batch) -> dict`, `@staticmethod to_tensor(data_dict)` (or `prepare_inputs`) and
`infer_batch(batch)`. Hyrax attaches `self.criterion`, `self.optimizer` and `self.scheduler`.
"""

from __future__ import annotations

from typing import TypeVar

from hyrax import registry

T = TypeVar("T", bound=type)


def hyrax_model(cls: T) -> T:
    """Register a model class under its bare name; the class itself is returned unchanged."""
    return registry.register("model", cls)


__all__ = ["hyrax_model"]
