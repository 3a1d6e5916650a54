"""One training step, and the losses it leaves on the device until a logging interval reads them.

The default step runs under `train.precision`'s autocast, scales fp16 losses, accumulates gradients
over `train.accumulate_grad_batches` batches and clips them; a model's own `train_step` runs under
the same autocast and is told the accumulation through `model.accumulate_grad_batches` (and fp16's
scaler through `model.grad_scaler`). Nothing here waits for the device between logging intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hyrax.errors import HyraxError, NonFiniteLossError
from hyrax.models.contract import TRAIN_STEP_NAMES, batch_length, find_method, inputs_and_labels, loss_value
from hyrax.train import distributed
from hyrax.train.distributed import Ranks
from hyrax.train.precision import Precision


class Stepper:
    """Trains on one batch at a time, the default way or through the model's own `train_step`."""

    def __init__(
        self,
        model: nn.Module,
        precision: Precision,
        accumulate: int,
        grad_clip: float | None,
        ranks: Ranks,
    ) -> None:
        self.model, self.precision, self.accumulate, self.grad_clip = model, precision, accumulate, grad_clip
        self.own_step = find_method(model, TRAIN_STEP_NAMES)
        self.pending = 0  # micro-batches whose gradients wait for an optimizer step
        model.accumulate_grad_batches = accumulate
        model.grad_scaler = precision.scaler
        optimizer = getattr(model, "optimizer", None)
        self.sync = distributed.GradientSync(model, optimizer) if ranks.many and optimizer else None

    def step(self, batch: Any) -> tuple[torch.Tensor | float | None, dict[str, Any]]:
        """Train on `batch` (None: this rank has no batch in a step the other ranks take); returns the
        loss (on the device) and the extra values a model's own step returned."""
        if self.sync is not None:
            self.sync.add(0 if batch is None else batch_length(batch))
        if self.own_step is None:
            return self._default_step(batch), {}
        if batch is None:  # keep in step with the ranks whose train_step steps the optimizer
            self._zero_grads()
            self.model.optimizer.step()
            return None, {}
        with self.precision.autocast():
            result = self.own_step(batch)
        extras = {k: v for k, v in result.items() if k != "loss"} if isinstance(result, Mapping) else {}
        return loss_value(result, self.model), extras

    def finish_epoch(self) -> None:
        """Step on gradients still accumulating when an epoch ends."""
        if self.own_step is None and self.pending:
            self._optimizer_step()

    def _default_step(self, batch: Any) -> torch.Tensor | None:
        loss = None
        if batch is not None:
            x, y = inputs_and_labels(batch)
            if y is None:
                raise HyraxError(
                    "the data set has no labels, so the default training step cannot compute a loss",
                    key="model",
                    fix=f"define train_step(batch) on {type(self.model).__qualname__}, or use a labeled "
                    "data set",
                )
            with self.precision.autocast():
                loss = self.model.criterion(self.model(x), y)
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            if self.precision.scaler is not None:
                scaled = self.precision.scaler.scale(scaled)
            scaled.backward()
        self.pending += 1
        if self.pending >= self.accumulate:
            self._optimizer_step()
        return None if loss is None else loss.detach()

    def _optimizer_step(self) -> None:
        optimizer, scaler = self.model.optimizer, self.precision.scaler
        if self.sync is not None:
            self.sync.reduce()  # before unscaling, so every rank sees the same inf/NaN check
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.sync is not None:
            self.sync.reset()
        optimizer.zero_grad(set_to_none=True)
        self.pending = 0

    def _zero_grads(self) -> None:
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)


@dataclass
class LossMeter:
    """An epoch's training losses, kept on the device and read in one transfer per logging interval:
    the NaN/inf check, the moving average `train/loss_step` and the epoch's mean come from that read."""

    ranks: Ranks
    span: int  # train.log_every_n_steps: the moving average's span
    average: float | None = None  # carried across epochs (a checkpoint keeps it)
    total: float = 0.0
    count: int = 0
    pending: list[Any] = field(default_factory=list)
    first_step: int = 0  # the global step of pending[0]
    extras: dict[str, Any] = field(default_factory=dict)  # the last value of each extra

    def add(self, loss: torch.Tensor | float | None, extras: Mapping[str, Any], step: int) -> None:
        """Keep one step's loss (None: this rank had no batch) and extras, without reading them."""
        if loss is None:
            return
        if not self.pending:
            self.first_step = step
        self.pending.append(loss.reshape(()).float() if torch.is_tensor(loss) else float(loss))
        for key, value in extras.items():
            self.extras[key] = value.detach().float().mean() if torch.is_tensor(value) else value

    def read(self, epoch: int) -> float | None:
        """Read what is pending (one device transfer), check it, and return the moving average over
        every rank; raises `NonFiniteLossError` on every rank when any rank's loss went NaN or inf."""
        values = _to_floats(self.pending)
        self.pending = []
        bad = next((self.first_step + i for i, v in enumerate(values) if not math.isfinite(v)), None)
        for value in values if bad is None else []:
            weight = 2.0 / (self.span + 1)
            self.average = value if self.average is None else self.average + weight * (value - self.average)
        report = (bad, values[bad - self.first_step] if bad is not None else None, self.average)
        reports = distributed.gather(report) if self.ranks.many else [report]
        failed = [(r, s, v) for r, (s, v, _) in enumerate(reports) if s is not None]
        if failed:
            rank, step, value = failed[0]
            where = f" on rank {rank}" if self.ranks.many else ""
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {epoch + 1}, step {step}{where}",
                key="optimizer.lr",
                fix="lower optimizer.lr, set train.grad_clip, or check the data "
                "for NaNs (data_set.nan_mode=zero); checkpoints so far are kept",
            )
        self.total += sum(values)
        self.count += len(values)
        averages = [a for _, _, a in reports if a is not None]
        return sum(averages) / len(averages) if averages else None

    def extra_values(self) -> dict[str, float]:
        """The last value of each extra a model's own step returned, read now."""
        return {k: float(v) for k, v in self.extras.items()}

    def epoch_mean(self) -> float:
        """The epoch's mean training loss over every rank's steps (after a final `read`)."""
        totals = (
            distributed.gather((self.total, self.count)) if self.ranks.many else [(self.total, self.count)]
        )
        total, count = sum(t for t, _ in totals), sum(c for _, c in totals)
        return total / max(count, 1)


def _to_floats(values: list[Any]) -> list[float]:
    tensors = [v for v in values if torch.is_tensor(v)]
    if not tensors:
        return [float(v) for v in values]
    read = iter(torch.stack([t.to(tensors[0].device) for t in tensors]).tolist())
    return [next(read) if torch.is_tensor(v) else float(v) for v in values]
