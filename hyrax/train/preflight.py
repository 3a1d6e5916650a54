"""The check before training: run the model once on a sample batch, so a model/data mismatch is one clear
error naming the model and the shapes, not a crash in epoch 1."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from hyrax.errors import HyraxError
from hyrax.models.contract import has_own_step, inputs_and_labels, learn_criterion_fit, learn_forward
from hyrax.train.data import DataParts
from hyrax.train.evaluate import to_device

FORWARD_ERRORS = (RuntimeError, ValueError, IndexError)


def preflight(model: nn.Module, data: DataParts) -> None:
    """Run forward on the sample batch; judge the criterion against the labels only for models that
    use the default training step (a model with its own step decides itself what its loss is)."""
    batch = to_device(data.sample_batch, next(model.parameters(), torch.empty(0)).device)
    name = type(model).__qualname__
    try:
        with torch.no_grad():
            output = learn_forward(model, batch)
    except FORWARD_ERRORS as err:
        raise HyraxError(
            f"{name} cannot take the data: a batch {describe_shapes(batch)} failed in forward "
            f"{_expected_input(model)}: {_first_line(err)}",
            key="model",
            fix="make the model's input size match the data (see `hyrax-run verb=prepare`), "
            "or convert items in to_tensor",
        ) from err
    labels = inputs_and_labels(batch)[1]
    if has_own_step(model):
        learn_criterion_fit(model, output, labels)
    else:
        _check_criterion(model, output, labels)


def _check_criterion(model: nn.Module, output: Any, y: Any) -> None:
    criterion = getattr(model, "criterion", None)
    if y is None or criterion is None or not isinstance(output, torch.Tensor):
        return
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # torch warns, not fails, on silent broadcasting
            criterion(output, y)
    except (RuntimeError, ValueError, IndexError, UserWarning) as err:
        raise HyraxError(
            f"{type(model).__qualname__}'s output shaped {tuple(output.shape)} does not fit labels shaped "
            f"{tuple(y.shape)} ({y.dtype}) under {type(criterion).__name__}: {_first_line(err)}",
            key="criterion",
            fix="pick a criterion that fits the labels (criterion=mse for real-valued "
            "targets), or set model.num_outputs",
        ) from err


def describe_shapes(batch: Any) -> str:
    """`shaped (8, 20) (torch.float32)`, or the shapes of each part of a tuple batch."""
    if isinstance(batch, torch.Tensor):
        return f"shaped {tuple(batch.shape)} ({batch.dtype})"
    if isinstance(batch, (tuple, list)):
        return "of (" + ", ".join(describe_shapes(b).removeprefix("shaped ") for b in batch) + ")"
    return f"of {type(batch).__name__}"


def _expected_input(model: nn.Module) -> str:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return f"(its first Linear layer expects {module.in_features} features)"
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"(its first convolution expects {module.in_channels} channels)"
    return ""


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
