"""Hyrax: a Hydra-composed experiment runner for PyTorch.

    from hyrax import Hyrax
    h = Hyrax(overrides=["model=mlp", "train.epochs=3"])
    h.train()

Names are imported lazily so that `hyrax-run --help` does not pay for torch or mlflow.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Hyrax", "HyraxError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Hyrax":
        from hyrax.api import Hyrax

        return Hyrax
    if name == "HyraxError":
        from hyrax.errors import HyraxError

        return HyraxError
    raise AttributeError(f"module 'hyrax' has no attribute {name!r}")
