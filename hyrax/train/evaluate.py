"""Evaluating a model on batches (loss, accuracy, or the model's own `validate_step`) and predicting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from hyrax.models.contract import (
    INFER_NAMES,
    VALIDATE_NAMES,
    batch_length,
    default_metrics_apply,
    find_method,
    forward,
    inputs_and_labels,
)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (a tensor or a tuple of tensors) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def is_classification(output: torch.Tensor, labels: torch.Tensor | None) -> bool:
    """Class-index labels against per-class scores: accuracy makes sense."""
    return labels is not None and not torch.is_floating_point(labels) and output.dim() == labels.dim() + 1


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    step_names: tuple[str, ...] = VALIDATE_NAMES,
    ranks: Any = None,
    autocast: Any = None,
) -> dict[str, float]:
    """Mean metrics over `batches`: the model's own step's results (`validate_step`/`validate_batch`,
    or the test spellings for the test split), else loss and, for class labels, accuracy.

    Sums stay on the device until the end; with several ranks (`ranks`, a
    `hyrax.train.distributed.Ranks`) each evaluates its shard and the means are over all of them."""
    model.eval()
    validate_step = find_method(model, step_names)
    totals: dict[str, Any] = {}
    count = 0
    for batch in batches:
        batch = to_device(batch, device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            metrics = _step_metrics(model, batch, validate_step)
        n = batch_length(batch)
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value * n
        count += n
    model.train()
    sums = {k: _scalar(v) for k, v in totals.items()}
    if ranks is not None and ranks.many:
        from hyrax.train.distributed import gather

        shares = gather((sums, count))
        count = sum(c for _, c in shares)
        sums = {
            k: sum(s.get(k, 0.0) for s, _ in shares) for k in dict.fromkeys(k for s, _ in shares for k in s)
        }
    return {k: v / count for k, v in sums.items()} if count else {}


def _step_metrics(model: nn.Module, batch: Any, validate_step: Any) -> dict[str, Any]:
    if validate_step is not None:
        return {k: _on_device(v) for k, v in validate_step(batch).items()}
    y = inputs_and_labels(batch)[1]
    if y is None or getattr(model, "criterion", None) is None or not default_metrics_apply(model):
        return {}
    output = forward(model, batch)
    metrics = {"loss": model.criterion(output, y).detach().float()}
    if is_classification(output, y):
        metrics["accuracy"] = (output.argmax(dim=-1) == y).float().mean()
    return metrics


def _on_device(value: Any) -> Any:
    """A step's value as a scalar, left on the device when it is a tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().mean()
    return _scalar(value)


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    if isinstance(value, (list, tuple)):
        return float(np.mean([_scalar(v) for v in value]))
    return float(value)


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Any], device: torch.device) -> np.ndarray:
    """The model's outputs for every batch, in order (`infer_batch` when the model has one)."""
    model.eval()
    infer = find_method(model, INFER_NAMES)
    outputs = []
    for batch in batches:
        batch = to_device(batch, device)
        result = infer(batch) if infer is not None else forward(model, batch)
        outputs.append(_as_array(result))
    return np.concatenate(outputs) if outputs else np.empty((0,))


def _as_array(result: Any) -> np.ndarray:
    if isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
        result = result[0]  # e.g. (output, labels): the first part is the prediction
    return torch.as_tensor(result).detach().cpu().numpy()
