"""The training loop: one plain epoch loop with validation, checkpoints, early stopping and pruning."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from hyrax.errors import HyraxError
from hyrax.models.contract import batch_length
from hyrax.train import checkpoint, distributed
from hyrax.train.distributed import SINGLE, Ranks
from hyrax.train.evaluate import evaluate, to_device
from hyrax.train.objective import check_measured
from hyrax.train.precision import Precision
from hyrax.train.steps import LossMeter, Stepper

log = logging.getLogger("hyrax")


@dataclass
class LoopState:
    """Where a run stands: saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    loss_average: float | None = None  # `train/loss_step`: a moving average carried across epochs


@dataclass
class Loop:
    """Everything the loop needs; built by `hyrax.train.run`."""

    model: nn.Module
    batches: dict[str, Any]
    device: torch.device
    train_cfg: dict[str, Any]
    run_dir: Path
    tracker: Any
    extra_state: dict[str, Any]
    progress: bool
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
    state: LoopState = field(default_factory=LoopState)
    precision: Precision | None = None  # float32 when None
    ranks: Ranks = SINGLE

    def __post_init__(self) -> None:
        self.precision = self.precision or Precision("32", self.device.type, None)
        self.stepper = Stepper(
            self.model,
            self.precision,
            self.train_cfg.get("accumulate_grad_batches", 1),
            self.train_cfg["grad_clip"],
            self.ranks,
        )

    def fit(self) -> LoopState:
        """Train until `train.epochs`, early stopping, or the trial is pruned; returns the final state.

        With several ranks every rank runs this; their metrics are reduced first, so every rank
        judges early stopping alike, and rank 0's word on pruning reaches the others."""
        monitor, mode = None, "min"
        if self.ranks.many:
            distributed.broadcast_module(self.model)
        for epoch in range(self.state.epoch, self.train_cfg["epochs"]):
            self.batches["train"].set_epoch(epoch)
            metrics = self._train_epoch(epoch)
            if self.ranks.many:
                distributed.broadcast_module(self.model, buffers_only=True)
            if not self.batches["validate"].empty:
                measured = evaluate(
                    self.model,
                    self.batches["validate"],
                    self.device,
                    ranks=self.ranks,
                    autocast=self._autocast,
                )
                metrics.update({f"val/{k}": v for k, v in measured.items()})
            if monitor is None:
                monitor, mode = self._monitor(metrics)
                check_measured(self.train_cfg["objective"]["metric"], metrics, not self.batches["test"].empty)
            self._step_scheduler(metrics.get(monitor))
            improved = self._judge(metrics, monitor, mode)
            self.state.epoch = epoch + 1
            self.tracker.log_metrics({**metrics, "epoch": epoch + 1}, self.state.step)
            self.tracker.flush()
            if self.ranks.main:
                self._save_checkpoints(improved)
                log.info("epoch %d/%d  %s", epoch + 1, self.train_cfg["epochs"], _fmt(metrics))
            self._end_of_epoch(epoch, metrics)
            if self._should_stop():
                log.info("early stopping: %s has not improved for %d epochs", monitor, self.state.bad_epochs)
                break
        return self.state

    def _autocast(self) -> Any:
        return self.precision.autocast()

    def _end_of_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Rank 0 tells the sweeper (which may prune the trial); other ranks learn what it decided."""
        if not self.ranks.many:
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, metrics)
            return
        if not self.ranks.main:
            decision = distributed.from_main()
            if decision is not None:
                why = "its trial was pruned" if decision == "TrialPruned" else f"it raised {decision}"
                raise StoppedByMain(f"rank 0 stopped the run after epoch {epoch + 1} ({why})")
            return
        try:
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, metrics)
        except BaseException as err:
            distributed.from_main(type(err).__name__)
            raise
        distributed.from_main(None)

    def _monitor(self, metrics: dict[str, float]) -> tuple[str, str]:
        """What best checkpoints and early stopping judge: `train.early_stopping.monitor`, or train/loss
        when validation measured nothing (no validate split, or no labels and no validate step)."""
        stopping = self.train_cfg["early_stopping"]
        monitor, mode = stopping["monitor"], stopping["mode"]
        if monitor.startswith("val/") and monitor not in metrics:
            why = (
                "no validate split"
                if self.batches["validate"].empty
                else f"validation measured no {monitor} (the model has no validate step, and its batches "
                "carry no labels its criterion can judge its output against)"
            )
            log.warning("%s: judging best checkpoints, early stopping and the objective on train/loss", why)
            return "train/loss", "min"
        if monitor not in metrics:
            raise HyraxError(
                f"train.early_stopping.monitor '{monitor}' is not measured "
                f"(have: {', '.join(sorted(metrics))})",
                key="train.early_stopping.monitor",
                fix="name one of the measured metrics, e.g. train.early_stopping.monitor=val/loss",
            )
        return monitor, mode

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, batches = self.train_cfg, self.batches["train"]
        every = cfg["log_every_n_steps"]
        meter = LossMeter(self.ranks, every, self.state.loss_average)
        samples = 0
        started = time.perf_counter()
        steps = distributed.aligned(batches, batches.steps_per_rank(), self.ranks)
        bar = tqdm(
            steps, desc=f"epoch {epoch + 1}", disable=not self.progress, leave=False, dynamic_ncols=True
        )
        self.model.train()
        for batch in bar:
            batch = None if batch is None else to_device(batch, self.device)
            loss, extras = self.stepper.step(batch)
            self.state.step += 1
            samples += 0 if batch is None else batch_length(batch)
            meter.add(loss, extras, self.state.step)
            if self.state.step % every == 0:
                average = meter.read(epoch)
                if average is not None:
                    extra = {f"train/{k}": v for k, v in meter.extra_values().items()}
                    self.tracker.log_metrics({"train/loss_step": average, **extra}, self.state.step)
                    bar.set_postfix(loss=f"{average:.4g}", refresh=False)
        self.stepper.finish_epoch()
        meter.read(epoch)
        self.state.loss_average = meter.average
        seconds = time.perf_counter() - started
        total_samples = sum(distributed.gather(samples)) if self.ranks.many else samples
        optimizer = self.model.optimizer
        return {
            "train/loss": meter.epoch_mean(),
            "samples_per_s": total_samples / max(seconds, 1e-9),
            "lr": optimizer.param_groups[0]["lr"] if optimizer is not None else 0.0,
            **{f"train/{k}": v for k, v in meter.extra_values().items()},
        }

    def _step_scheduler(self, monitored: float | None) -> None:
        scheduler = getattr(self.model, "scheduler", None)
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if monitored is not None:
                scheduler.step(monitored)
        else:
            scheduler.step()

    def _judge(self, metrics: dict[str, float], monitor: str, mode: str) -> bool:
        value = metrics.get(monitor)
        if value is None:
            return False
        delta = self.train_cfg["early_stopping"]["min_delta"]
        best = self.state.best
        better = best is None or (value < best - delta if mode == "min" else value > best + delta)
        if better:
            self.state.best, self.state.best_epoch, self.state.bad_epochs = value, self.state.epoch, 0
            self.state.best_metrics = dict(metrics)
        else:
            self.state.bad_epochs += 1
        return better

    def _should_stop(self) -> bool:
        patience = self.train_cfg["early_stopping"]["patience"]
        return patience is not None and self.state.bad_epochs >= patience

    def _save_checkpoints(self, improved: bool) -> None:
        policy = self.train_cfg["checkpoint"]
        folder = checkpoint.checkpoint_dir(self.run_dir)
        due = self.state.epoch % policy["every_n_epochs"] == 0
        if not (improved and policy["save_best"]) and not (policy["save_last"] and due):
            return
        state = self.snapshot()
        self.tracker.wait()  # a run killed after this checkpoint resumes with its metrics all in MLflow
        if improved and policy["save_best"]:
            checkpoint.save(folder / checkpoint.BEST, state)
        if policy["save_last"] and due:
            checkpoint.save(folder / checkpoint.LAST, state)

    def snapshot(self) -> dict[str, Any]:
        """The checkpoint contents for the current state."""
        model = self.model
        scheduler = getattr(model, "scheduler", None)
        return {
            "model": model.state_dict(),
            "optimizer": model.optimizer.state_dict() if model.optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "loop": asdict(self.state),
            "rng": checkpoint.rng_states(),
            **self.extra_state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint made by `snapshot`."""
        model = self.model
        model.load_state_dict(state["model"])
        if state.get("optimizer") and model.optimizer is not None:
            model.optimizer.load_state_dict(state["optimizer"])
        scheduler = getattr(model, "scheduler", None)
        if state.get("scheduler") and scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        self._configured_over_checkpoint()
        self.state = LoopState(**state["loop"])
        checkpoint.restore_rng(state["rng"])

    def _configured_over_checkpoint(self) -> None:
        """A resumed run's optimizer and scheduler settings are the configured ones, not the checkpoint's
        (`train.epochs=6` on resume stretches a cosine schedule's `T_max` to 6); the log says what changed."""
        config = self.extra_state.get("config") or {}
        optimizer, scheduler = self.model.optimizer, getattr(self.model, "scheduler", None)
        changed: list[str] = []
        for name, value in _settings(config.get("optimizer")).items():
            for group in optimizer.param_groups if optimizer is not None else []:
                key = "initial_lr" if name == "lr" and "initial_lr" in group else name
                if key in group and group[key] != value:
                    changed.append(f"optimizer.{name}={value} (checkpoint: {group[key]})")
                    group[key] = value
                    if key == "initial_lr":
                        group["lr"] = value
        if changed and scheduler is not None and hasattr(scheduler, "base_lrs") and optimizer is not None:
            scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for name, value in _settings(config.get("scheduler")).items():
            if scheduler is not None and hasattr(scheduler, name) and getattr(scheduler, name) != value:
                changed.append(f"scheduler.{name}={value} (checkpoint: {getattr(scheduler, name)})")
                setattr(scheduler, name, value)
        if changed:
            closed_form = getattr(scheduler, "_get_closed_form_lr", None)
            if closed_form is not None and optimizer is not None:  # where the new schedule is now
                for group, lr in zip(optimizer.param_groups, closed_form(), strict=True):
                    group["lr"] = lr
            log.info("resuming with the configured %s", ", ".join(dict.fromkeys(changed)))


class StoppedByMain(Exception):
    """Raised on ranks other than 0 when rank 0 ends the run early (a pruned trial, an error)."""


def _settings(node: Any) -> dict[str, Any]:
    """A component config's plain values (no `_target_`, no tables)."""
    if not isinstance(node, dict):
        return {}
    return {k: v for k, v in node.items() if not k.startswith("_") and isinstance(v, (int, float, str))}


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
