"""What Hyrax hands Lightning's Trainer: a logger that writes into Hyrax's MLflow run, a callback that
judges each epoch as Hyrax's loop does (the monitored metric, the best epoch, pruning, the epoch's log
line, what a checkpoint keeps for a resumed run), Lightning's checkpoint and early-stopping callbacks
set from `train.*`, the checkpoint a resumed run continues from, Hyrax's batches as Lightning data, and
Ctrl-C kept a KeyboardInterrupt.

Lightning comes in two spellings, `pytorch_lightning` and `lightning.pytorch`; the Trainer, the logger
and the callbacks must come from the one the model subclasses, so the classes here are made per package
(`lightning_classes`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from hyrax.errors import HyraxError
from hyrax.train.objective import check_measured

log = logging.getLogger("hyrax")
# The packages a LightningModule may come from, by the module names of the classes it derives from.
PACKAGES = {"pytorch_lightning": "pytorch_lightning", "lightning": "lightning.pytorch"}
INSTALL = "pip install 'hyrax-runner[lightning]'"
SPLITS = ("train", "val", "test")


def lightning_package(cls: type, base: str = "LightningModule") -> str | None:
    """The Lightning package `cls` derives `base` from (`pytorch_lightning` or `lightning.pytorch`),
    read from its classes' module names, without importing Lightning; None when it is no `base`."""
    for klass in getattr(cls, "__mro__", ()):
        root = klass.__module__.split(".")[0]
        if klass.__name__ == base and root in PACKAGES:
            return PACKAGES[root]
    return None


def missing_lightning(what: str) -> HyraxError:
    """The error for a Lightning class when Lightning is not installed."""
    return HyraxError(
        f"{what} needs PyTorch Lightning, which is not installed", key="model", fix=f"run {INSTALL}"
    )


def import_lightning(package: str) -> Any:
    """The Lightning package the model was written for, or the error saying what to install."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError:
        raise missing_lightning(f"a {package} LightningModule") from None


def resume_point(resumed: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """The Lightning checkpoint `train.resume` found (see `hyrax.train.checkpoint.load`) and the metric
    that run monitored (its callbacks' saved state is found under that name)."""
    if resumed is None:
        return None, None
    path = resumed.get("lightning_ckpt")
    if path is None:
        raise HyraxError(
            "train.resume names a checkpoint of Hyrax's own training loop (.pt); a LightningModule "
            "resumes from the Lightning checkpoint (.ckpt) of an earlier run of it",
            key="train.resume",
            fix="give the run directory or the .ckpt file of a run of this LightningModule",
        )
    return str(path), (resumed.get("hyrax") or {}).get("monitor")


def hyrax_names(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics with Hyrax's spelling of Lightning's usual names added (`val_loss` is also `val/loss`),
    so that the default `val/loss` monitor and objective find what a LightningModule logs."""
    named = dict(metrics)
    for key, value in metrics.items():
        split, sep, rest = key.partition("_")
        if sep and split in SPLITS and rest:
            named.setdefault(f"{split}/{rest}", value)
    return named


def logged_name(wanted: str, metrics: Mapping[str, float]) -> str | None:
    """The name under which the module logged the metric `wanted` (as given, or `val_loss` for
    `val/loss`), or None."""
    split, sep, rest = wanted.partition("/")
    for name in (wanted, f"{split}_{rest}" if sep else None):
        if name is not None and name in metrics:
            return name
    return None


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers among Lightning's callback metrics (one-element tensors included)."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number or (isinstance(value, torch.Tensor) and value.numel() == 1):
            found[key] = float(value)
    return found


def plain(value: Any) -> Any:
    """A value a weights-only checkpoint load accepts: numbers, strings, tensors, and lists and dicts of
    them; anything else (a config view, a class, a function) becomes its readable text."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return repr(value)


class EpochBatches:
    """One split of Hyrax's batches as Lightning data: an iterable, sized when its length is known (an
    iterable data set's is not; a length of 0 would tell Lightning there is nothing to train on)."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)


class SizedEpochBatches(EpochBatches):
    """`EpochBatches` whose number of batches per epoch is known."""

    def __len__(self) -> int:
        return len(self.batches)


def as_lightning_data(batches: Any, world: int = 1) -> Any:
    """Hyrax's batches of one split as something `Trainer.fit`/`test` iterate over (with several ranks,
    this rank's share of the split, as many batches on every rank: see `hyrax.train.lightning_ranks`)."""
    if world > 1:
        from hyrax.train.lightning_ranks import rank_batches

        return rank_batches(batches, world)
    return SizedEpochBatches(batches) if getattr(batches, "size", None) is not None else EpochBatches(batches)


@functools.cache
def lightning_classes(package: str) -> SimpleNamespace:
    """Hyrax's logger and epoch callback, derived from `package`'s classes (`pytorch_lightning` or
    `lightning.pytorch`), together with that package's Trainer, ModelCheckpoint and EarlyStopping."""
    pl = import_lightning(package)
    callbacks = importlib.import_module(f"{package}.callbacks")
    loggers = importlib.import_module(f"{package}.loggers")

    class TrackerLogger(loggers.Logger):
        """Lightning's metrics into Hyrax's MLflow run (a sweep's child run in sweeps): the tracker
        Hyrax opened, instead of a logger that would open a run of its own."""

        def __init__(self, tracker: Any, save_dir: str) -> None:
            super().__init__()
            self.tracker, self._save_dir = tracker, save_dir

        @property
        def name(self) -> str:
            return "hyrax"

        @property
        def version(self) -> str:
            return self.tracker.run_id or "offline"

        @property
        def save_dir(self) -> str:
            return self._save_dir

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            """Nothing: the run's parameters are its config (`model.*`), logged when it started."""

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            # Lightning adds a 0-based `epoch`; Hyrax logs its own 1-based one (see EpochJudge).
            values = {k: v for k, v in scalars(metrics).items() if k != "epoch"}
            if values:
                self.tracker.log_metrics(values, int(step or 0))

        def save(self) -> None:
            self.tracker.flush()

        def finalize(self, status: str) -> None:
            self.tracker.flush()  # the run's status is Hyrax's to set, when the whole job ends

    class EpochJudge(pl.Callback):
        """Each epoch as Hyrax's loop sees it: the metric that decides best checkpoints and early stopping
        (found once, falling back to the train loss when validation measured nothing), the best epoch's
        metrics (what the objective is read from), the `epoch` and `lr` metrics, the log line, the
        sweep's pruning hook, and what Hyrax keeps in a checkpoint."""

        def __init__(
            self,
            config: Mapping[str, Any],
            extra: Mapping[str, Any],
            on_epoch_end: Callable[[int, dict[str, float]], None] | None,
            watchers: list[Any],
            batches: list[Any],
            tests_later: bool,
        ) -> None:
            self.train_cfg, self.extra, self.on_epoch_end = config["train"], dict(extra), on_epoch_end
            self.watchers, self.batches, self.tests_later = watchers, batches, tests_later
            self.tracker: Any = extra["tracker"]
            self.monitor: str | None = extra.get("monitor")
            self.mode = self.train_cfg["early_stopping"]["mode"]
            self.best: float | None = None
            self.best_epoch = -1
            self.best_metrics: dict[str, float] = {}
            self.exception: BaseException | None = None
            self.train_losses: list[float] = []  # each epoch's, for train.overfit_batches' check
            self.step_hook: Callable[[], None] | None = None  # train.profile's step, after each batch

        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            if self.step_hook is not None:
                self.step_hook()

        @property
        def state_key(self) -> str:
            return "HyraxEpochJudge"  # its state's key in a checkpoint (else the local class's name)

        def state_dict(self) -> dict[str, Any]:
            return {
                "monitor": self.monitor,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "best_metrics": dict(self.best_metrics),
            }

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.monitor = state.get("monitor") or self.monitor
            self.best, self.best_epoch = state.get("best"), state.get("best_epoch", -1)
            self.best_metrics = dict(state.get("best_metrics") or {})

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            for batches in self.batches:  # this epoch's shuffle depends on the seed and the epoch only
                batches.set_epoch(trainer.current_epoch)

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            if trainer.sanity_checking:
                return
            metrics = scalars(trainer.callback_metrics)
            if self.monitor is None or self.monitor not in metrics:
                self.monitor = self._find_monitor(metrics, self.monitor is None)
            for watcher in self.watchers:  # Lightning's checkpoint and early stopping judge the same
                watcher.monitor = self.monitor
            epoch = trainer.current_epoch
            extra = {"epoch": epoch + 1}
            if trainer.optimizers:
                extra["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
            self.tracker.log_metrics(extra, trainer.global_step)
            self.tracker.flush()
            self._judge(epoch, metrics)
            if "train/loss" in hyrax_names(metrics):
                self.train_losses.append(hyrax_names(metrics)["train/loss"])
            shown = {k: v for k, v in metrics.items() if math.isfinite(v)}
            log.info(
                "epoch %d/%d  %s",
                epoch + 1,
                self.train_cfg["epochs"],
                "  ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())),
            )
            if trainer.world_size > 1:  # rank 0's decision (a pruned trial) stops every rank
                from hyrax.train.lightning_ranks import decided_by_main

                decided_by_main(trainer, self.on_epoch_end, epoch, hyrax_names(metrics))
            elif self.on_epoch_end is not None:
                self.on_epoch_end(epoch, hyrax_names(metrics))

        def _judge(self, epoch: int, metrics: dict[str, float]) -> None:
            value = metrics.get(self.monitor or "")
            if value is None or not math.isfinite(value):
                return
            best = self.best
            if best is None or (value < best if self.mode == "min" else value > best):
                self.best, self.best_epoch, self.best_metrics = value, epoch, hyrax_names(metrics)

        def _find_monitor(self, metrics: dict[str, float], first: bool) -> str:
            """The logged name of `train.early_stopping.monitor`, or of the train loss when validation
            measured nothing; checks `train.objective.metric` too, after the first epoch."""
            wanted = self.train_cfg["early_stopping"]["monitor"]
            found = logged_name(wanted, metrics)
            if found is None and wanted.startswith("val/") and not any(_is_val(k) for k in metrics):
                found = logged_name("train/" + wanted.removeprefix("val/"), metrics)
                if found is not None:
                    log.warning(
                        "validation measured nothing (no validate split, or no validation_step that "
                        "logs): judging best checkpoints, early stopping and the objective on %s",
                        found,
                    )
                    self.mode = "min" if "loss" in found else self.mode
            if found is None:
                raise HyraxError(
                    f"train.early_stopping.monitor '{wanted}' is not logged by the LightningModule "
                    f"(it logs: {', '.join(sorted(metrics)) or 'nothing'})",
                    key="train.early_stopping.monitor",
                    fix="name a metric the module logs with self.log(...), or log that one",
                )
            if first:
                wanted = self.train_cfg["objective"]["metric"]
                names = hyrax_names(metrics)
                check_measured(wanted, names, self.tests_later, "logged by the LightningModule")
            return found

        def on_save_checkpoint(self, trainer: Any, module: Any, checkpoint: dict[str, Any]) -> None:
            checkpoint["hyrax"] = {
                "mlflow_run_id": self.extra.get("mlflow_run_id"),
                "epochs_done": trainer.current_epoch + 1,
                "monitor": self.monitor,
                "config": plain(self.extra.get("config") or {}),
            }
            for key in ("hyper_parameters", "datamodule_hyper_parameters"):
                if key in checkpoint:  # weights-only loading (Hyrax's and Lightning's) refuses objects
                    checkpoint[key] = plain(checkpoint[key])
            checkpoint.pop("hparams_type", None)
            checkpoint.pop("datamodule_hparams_type", None)

        def on_exception(self, trainer: Any, module: Any, exception: BaseException) -> None:
            self.exception = exception

    return SimpleNamespace(
        Trainer=pl.Trainer,
        LightningModule=pl.LightningModule,
        LightningDataModule=pl.LightningDataModule,
        ModelCheckpoint=callbacks.ModelCheckpoint,
        EarlyStopping=callbacks.EarlyStopping,
        TrackerLogger=TrackerLogger,
        EpochJudge=EpochJudge,
    )


def _is_val(name: str) -> bool:
    return name.startswith(("val/", "val_"))


def make_callbacks(
    L: Any, train_cfg: Mapping[str, Any], folder: Path, monitor: str | None
) -> tuple[list[Any], list[Any]]:
    """Lightning's ModelCheckpoints (`best.ckpt`, `last.ckpt` in `folder`) and EarlyStopping, as
    `train.checkpoint.*` and `train.early_stopping.*` say; returns the checkpointers and the callbacks
    that judge the monitored metric (the epoch callback tells them its logged name).

    `last.ckpt` has a checkpointer of its own: Lightning's `save_last` writes it only in epochs that also
    wrote a best checkpoint, and a resumed run must continue from the epoch that ended last."""
    policy, stopping = train_cfg["checkpoint"], train_cfg["early_stopping"]
    watched = monitor or stopping["monitor"]
    common = {
        "dirpath": str(folder),
        "auto_insert_metric_name": False,
        "enable_version_counter": False,
        "save_on_train_epoch_end": True,
        "save_top_k": 1,
    }
    checkpointers, watchers = [], []
    if policy["save_best"]:
        best = L.ModelCheckpoint(filename="best", monitor=watched, mode=stopping["mode"], **common)
        checkpointers.append(best)
        watchers.append(best)
    if policy["save_last"]:
        every = policy["every_n_epochs"]
        checkpointers.append(L.ModelCheckpoint(filename="last", every_n_epochs=every, **common))
    if stopping["patience"] is not None:
        watchers.append(
            L.EarlyStopping(
                monitor=watched,
                mode=stopping["mode"],
                patience=stopping["patience"],
                min_delta=stopping["min_delta"],
                check_on_train_epoch_end=True,
            )
        )
    return checkpointers, watchers


@contextmanager
def sigint_kept(judge: Any) -> Iterator[None]:
    """Around Trainer calls: Lightning turns Ctrl-C into `sys.exit(1)` and ignores further Ctrl-C; this
    puts Ctrl-C's handler back and raises KeyboardInterrupt again, so the run ends KILLED as with Hyrax's
    own loop."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SystemExit:
        if isinstance(judge.exception, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        with suppress(ValueError, TypeError):  # not the main thread, or a handler Python did not install
            signal.signal(signal.SIGINT, handler)
