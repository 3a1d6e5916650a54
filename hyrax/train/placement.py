"""`train.data_on_device`: whether an in-memory data set moves to the device once, before training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hyrax.errors import HyraxError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("hyrax")
CHOICES = ("auto", "true", "false")
FREE_SHARE = 0.5  # `auto` moves data that takes at most this share of the device's free memory


def known(value: Any) -> bool:
    """Whether `value` is one of `CHOICES` (Hydra may hand over a bool)."""
    return str(value).strip().lower() in CHOICES


def choice(value: Any) -> str:
    """`train.data_on_device` as auto, true or false (Hydra may hand over a bool)."""
    name = str(value).strip().lower()
    if name not in CHOICES:
        raise HyraxError(
            f"train.data_on_device '{value}' is not one of {', '.join(CHOICES)}",
            key="train.data_on_device",
            fix="use train.data_on_device=auto (move in-memory data sets that fit), true or false",
        )
    return name


def place(batches: Mapping[str, Any], device: torch.device, setting: Any) -> bool:
    """Put every split where training reads it from; returns whether the data now lives on `device`."""
    wanted = choice(setting)
    in_memory = [b for b in batches.values() if b.tensors is not None]
    if wanted == "true" and len(in_memory) < len(batches):
        raise HyraxError(
            "train.data_on_device=true needs an in-memory data set (its items as tensors), and this one "
            "is read item by item",
            key="train.data_on_device",
            fix="use train.data_on_device=auto, or a data set built on hyrax.data_sets.InMemoryDataset",
        )
    move = device.type != "cpu" and bool(in_memory) and wanted != "false"
    if move and wanted == "auto":
        move = _fits(in_memory, device)
    moved: dict[int, torch.Tensor] = {}
    for split in batches.values():
        split.place(device, move, moved)
    if move:
        log.info("the data set lives on %s for the whole run (train.data_on_device)", device)
    return move or (device.type == "cpu" and bool(in_memory))


def _fits(in_memory: list[Any], device: torch.device) -> bool:
    """Whether the data takes at most `FREE_SHARE` of the device's free memory."""
    import torch

    tensors = {id(t): t for b in in_memory for t in b.tensors if t is not None}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return size <= FREE_SHARE * free
    return True
