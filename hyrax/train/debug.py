"""The debugging presets' machinery (`debug=fast|overfit|profile`): fewer batches, one batch over and
over with a check that the loss fell, and a torch.profiler trace.

The settings behind them work on their own too (`train.limit_batches=2`, `train.overfit_batches=1`,
`train.profile=true`); any of them marks the MLflow run with the `hyrax.debug` tag, saying what it
changed, so that a debug run is never mistaken for a real one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from hyrax import tags
from hyrax.errors import HyraxError

log = logging.getLogger("hyrax")
# `train.overfit_batches` passes when the last epoch's train loss is at most this fraction of the first
# epoch's: "close to zero" relative to where it started, whatever the loss's scale.
OVERFIT_RATIO = 0.05
DEBUG_KEYS = ("limit_batches", "overfit_batches", "profile")


def wrap(train_cfg: Mapping[str, Any], batches: dict[str, Any], tracker: Any) -> dict[str, Any]:
    """The splits' batches as `train.limit_batches` / `train.overfit_batches` / `train.profile` ask
    (unchanged by default); a debug run gets its tag (`mark`), and with overfit_batches its train
    losses are kept for `check_overfit`."""
    if not mark(train_cfg, tracker):
        return batches
    limit, overfit = train_cfg["limit_batches"], train_cfg["overfit_batches"]
    replay = FirstBatches(batches["train"], overfit) if overfit else None
    if overfit:
        tracker.mirrors.append(LossHistory())
        log.info("overfitting: the same %d train batch(es) every epoch, also validated and tested", overfit)
    return {split: DebugBatches(inner, limit, replay) for split, inner in batches.items()}


def mark(train_cfg: Mapping[str, Any], tracker: Any) -> bool:
    """Tag a run with debug settings on (`hyrax.debug`: what they change) and say so in the log;
    whether it is a debug run."""
    changed = debug_settings(train_cfg)
    if changed:
        described = _tag_value(changed)
        tracker.set_tags({tags.DEBUG: described})
        log.warning("debug run (%s): its metrics are not comparable with real runs'", described)
    return bool(changed)


def debug_settings(train_cfg: Mapping[str, Any]) -> list[str]:
    """The debug settings a run has on, as overrides (`train.limit_batches=1`); empty for a real run."""
    return [
        f"train.{key}={str(train_cfg[key]).lower()}"
        for key in DEBUG_KEYS
        if train_cfg.get(key) not in (None, 0, False)
    ]


def _tag_value(changed: list[str]) -> str:
    """`fast: train.limit_batches=1` for a preset chosen with `debug=`, else the settings alone."""
    from hydra.core.hydra_config import HydraConfig

    preset = HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None
    return f"{preset}: {' '.join(changed)}" if preset else " ".join(changed)


class FirstBatches:
    """The first `n` batches of a split, taken once (at the first epoch) and given again every epoch."""

    def __init__(self, source: Any, n: int) -> None:
        self.source, self.n = source, n
        self.kept: list[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        if self.kept is None:
            self.kept = list(islice(iter(self.source), self.n))
        return iter(self.kept)

    def __len__(self) -> int:
        """How many batches (before they are taken: `n`, or fewer when the split has fewer)."""
        if self.kept is not None:
            return len(self.kept)
        known = _steps(self.source)
        return self.n if known is None else min(self.n, known)


class DebugBatches:
    """One split's batches as the debug settings ask, standing in for its `Batches`.

    Iterating gives at most `limit` batches, of the split itself or of `replay` (the same first train
    batches every epoch), and calls each of `step_hooks` after each batch (the profiler steps there).
    `len()`, `steps_per_rank()` and `size` count what an epoch gives; every other attribute is the
    split's own, read and written through (`empty`, `set_epoch`, `shard`, `place`, `tensors`, ...).
    """

    _OWN = frozenset({"inner", "limit", "replay", "step_hooks"})

    def __init__(self, inner: Any, limit: int | None = None, replay: FirstBatches | None = None) -> None:
        self.inner, self.limit, self.replay = inner, limit, replay
        self.step_hooks: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        if name in DebugBatches._OWN:  # not set yet (copy, pickle): never look it up on the split
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in DebugBatches._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)

    def __iter__(self) -> Iterator[Any]:
        source: Iterator[Any] = iter(self.replay if self.replay is not None else self.inner)
        if self.limit is not None:
            source = islice(source, self.limit)
        for batch in source:
            yield batch
            for hook in self.step_hooks:
                hook()

    def __len__(self) -> int:
        """Batches per epoch; 0 when unknown (an iterable data set), as for `Batches`."""
        return self.steps_per_rank() or 0

    def steps_per_rank(self) -> int | None:
        """How many batches each rank steps through per epoch (None when unknown)."""
        known = len(self.replay) if self.replay is not None else _steps(self.inner)
        return known if known is None or self.limit is None else min(known, self.limit)

    @property
    def size(self) -> int | None:
        """Items per epoch, when known."""
        source = self.replay.source if self.replay is not None else self.inner
        if source.size is None:
            return None
        return min(len(self) * source.batch_size, source.size)


def _steps(batches: Any) -> int | None:
    """A split's batches per epoch (per rank), None when unknown."""
    if hasattr(batches, "steps_per_rank"):
        return batches.steps_per_rank()
    return len(batches) or None


class LossHistory:
    """A tracker mirror that keeps every epoch's `train/loss`, for the overfit check."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def __call__(self, metrics: Mapping[str, float], step: int) -> None:
        if "epoch" in metrics and "train/loss" in metrics:
            self.losses.append(float(metrics["train/loss"]))


def check_overfit(train_cfg: Mapping[str, Any], state: Any, tracker: Any) -> None:
    """With `train.overfit_batches`, fail loudly unless the train loss fell close to zero (the loop's
    losses come from the tracker mirror `wrap` installed)."""
    history = next((m for m in tracker.mirrors if isinstance(m, LossHistory)), None)
    if history is not None:
        check_losses(train_cfg, history.losses, state.epoch)


def check_losses(train_cfg: Mapping[str, Any], losses: list[float], last_epoch: int) -> None:
    """With `train.overfit_batches`, fail loudly unless the last epoch's train loss (of `losses`, one
    per epoch, the last one `last_epoch`) is at most `OVERFIT_RATIO` of the first's."""
    n = train_cfg["overfit_batches"]
    if not n or not losses:
        return
    first, last = losses[0], losses[-1]
    if first <= 0:
        log.warning(
            "overfit check skipped: the first train loss is %.4g, and falling to %.0f%% of it is no test "
            "of a loss that can be negative",
            first,
            100 * OVERFIT_RATIO,
        )
        return
    wanted = OVERFIT_RATIO * first
    epochs = len(losses)
    if last <= wanted:
        log.info(
            "overfit check passed: the train loss fell from %.4g to %.4g in %d epochs", first, last, epochs
        )
        return
    start = last_epoch - epochs + 1  # 1 unless the run resumed
    raise HyraxError(
        f"the model did not memorise {n} repeated train batch(es): the train loss went from {first:.4g} "
        f"(epoch {start}) to {last:.4g} (epoch {last_epoch}), above {wanted:.4g} "
        f"({100 * OVERFIT_RATIO:.0f}% of the first): training cannot fit even data it sees again and again",
        key="train.overfit_batches",
        fix="check that the loss compares the model's output with the right labels, that the optimizer "
        "steps the model's parameters and optimizer.lr is not 0 or tiny, and the model has the capacity; "
        f"or train longer (train.epochs={2 * max(epochs, 1)}); train.overfit_batches=0 turns the check off",
    )


@contextmanager
def step_profile(
    train_cfg: Mapping[str, Any], run_dir: Path, tracker: Any, planned: int | None
) -> Iterator[Any]:
    """With `train.profile`, a torch.profiler over the block: it yields the function to call after each
    train step (None when not profiling), and logs the trace files as `profile/` artifacts at the end."""
    if not train_cfg["profile"]:
        yield None
        return
    from hyrax.train.profiler import StepProfiler

    profiler = StepProfiler(run_dir / "profile", planned)
    profiler.start()
    try:
        yield profiler.step
    finally:
        for path in profiler.stop():
            tracker.log_artifact(path, "profile")


@contextmanager
def profiling(
    train_cfg: Mapping[str, Any], run_dir: Path, tracker: Any, batches: dict[str, Any]
) -> Iterator[None]:
    """With `train.profile`, record a torch.profiler trace of the first train steps while the block runs,
    written to `<run dir>/profile/` and logged as the run's `profile/` artifacts."""
    train = batches["train"]
    with step_profile(train_cfg, run_dir, tracker, len(train) * train_cfg["epochs"] or None) as step:
        if step is None:
            yield
            return
        train.step_hooks.append(step)
        try:
            yield
        finally:
            train.step_hooks.remove(step)
