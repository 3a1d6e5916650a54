"""`train.precision`: which autocast a run's forward passes use, and fp16's gradient scaler."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hyrax.errors import HyraxError

if TYPE_CHECKING:
    import torch

CHOICES = ("32", "bf16-mixed", "16-mixed")
ALIASES = {"32-true": "32", "32.0": "32", "bf16": "bf16-mixed", "16": "16-mixed"}


@dataclass
class Precision:
    """The autocast a run's forward passes run under (none for "32") and, for fp16 on CUDA, the
    gradient scaler that keeps small gradients from underflowing."""

    name: str
    device_type: str
    dtype: torch.dtype | None
    scaler: Any = None  # torch.amp.GradScaler for 16-mixed on CUDA

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context forward passes run in."""
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def known(value: Any) -> bool:
    """Whether `value` names a precision (Lightning's short names "bf16", "16", 32 included)."""
    name = str(value).strip().lower()
    return ALIASES.get(name, name) in CHOICES


def normalise(value: Any) -> str:
    """`train.precision` as one of `CHOICES`; an unknown value is an error naming the choices."""
    name = str(value).strip().lower()
    name = ALIASES.get(name, name)
    if name not in CHOICES:
        raise HyraxError(
            f"train.precision '{value}' is not a precision Hyrax knows",
            key="train.precision",
            fix=f"use one of {', '.join(CHOICES)}",
        )
    return name


def make_precision(value: Any, device: torch.device) -> Precision:
    """The `Precision` for `train.precision` on `device`; an error when the device cannot do it."""
    import torch

    name = normalise(value)
    kind = device.type
    if name == "32":
        return Precision(name, kind, None)
    if name == "16-mixed":
        if kind == "cpu":
            raise HyraxError(
                "train.precision=16-mixed needs a GPU: float16 autocast on the CPU is slow and unsupported "
                "by many operations",
                key="train.precision",
                fix="use train.precision=bf16-mixed on the CPU, or train on a GPU (train.device=cuda)",
            )
        scaler = torch.amp.GradScaler("cuda") if kind == "cuda" else None
        return Precision(name, kind, torch.float16, scaler)
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise HyraxError(
            f"train.precision=bf16-mixed: this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16",
            key="train.precision",
            fix="use train.precision=16-mixed on this GPU",
        )
    return Precision(name, kind, torch.bfloat16)
