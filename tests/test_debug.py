"""The debugging presets: `debug=fast` (one batch of each split, a tagged run and nothing else kept),
`debug=overfit` (one batch memorised, or a loud failure), `debug=profile` (a torch.profiler trace as
an artifact); and the batch wrapper and checks behind them, unit-tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from debugpkg import calls
from hyraxtest import metric_history, mlflow_runs, ok, parent_and_children, run_dirs, user_error

from hyrax import tags
from hyrax.data_sets import InMemoryDataset
from hyrax.data_sets.batches import Batches
from hyrax.errors import HyraxError
from hyrax.ranges import check_ranges
from hyrax.train import debug
from hyrax.train.debug import OVERFIT_RATIO, DebugBatches, FirstBatches, LossHistory
from hyrax.train.profiler import schedule_for

COUNTING = ["model=debugpkg.CallCounter", "train.log_every_n_steps=1"]


# ---- the batches wrapper and the checks, in this process ----------------------------------------


def split_batches(n: int = 10, batch_size: int = 4, shuffle: bool = True) -> Batches:
    """A split of `n` items (item i is the number i) in batches, as the loop gets them."""
    data = InMemoryDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))
    return Batches(data, np.arange(n), batch_size, shuffle, 0, lambda b: b, fast=True)


class FakeTracker:
    """What `debug` uses of a tracker: tags, mirrors, artifacts."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.mirrors: list = []
        self.artifacts: list[tuple[Path, str | None]] = []

    def set_tags(self, found: dict[str, str]) -> None:
        self.tags.update(found)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((path, artifact_path))


def train_cfg(**debugging) -> dict:
    return {"limit_batches": None, "overfit_batches": 0, "profile": False, "epochs": 1, **debugging}


def items(batches) -> list[list[int]]:
    return [batch[1].tolist() for batch in batches]


def test_without_debug_settings_the_batches_and_the_run_are_untouched() -> None:
    batches, tracker = {"train": split_batches()}, FakeTracker()
    assert debug.wrap(train_cfg(), batches, tracker) is batches
    assert tracker.tags == {} and tracker.mirrors == []


def test_limit_batches_gives_at_most_that_many_batches_and_passes_the_rest_through() -> None:
    inner = split_batches(10, 4)
    wrapped = DebugBatches(inner, limit=2)
    assert len(items(wrapped)) == 2
    assert (len(wrapped), wrapped.size) == (2, 8)  # of 3 batches (4, 4, 2) and 10 items
    assert (wrapped.empty, wrapped.batch_size, wrapped.convert) == (False, 4, inner.convert)
    wrapped.set_epoch(3)
    assert inner.generator.initial_seed() == 3  # seed 0 * 100_003 + epoch 3
    wrapped.tensors = (inner.tensors[0] * 2, inner.tensors[1])  # a write reaches the split
    assert float(inner.tensors[0].max()) == 18.0
    assert len(items(DebugBatches(split_batches(10, 4), limit=5))) == 3  # a limit above the split's


def test_overfit_batches_replays_the_same_first_batches_every_epoch_for_every_split() -> None:
    train, validate, empty = split_batches(10, 4), split_batches(6, 4), split_batches(0, 4)
    replay = FirstBatches(train, 1)
    wrapped = {s: DebugBatches(b, None, replay) for s, b in [("train", train), ("validate", validate)]}
    seen = []
    for epoch in range(3):
        wrapped["train"].set_epoch(epoch)  # the split reshuffles, the replay does not
        seen.append(items(wrapped["train"]))
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 1 and len(seen[0][0]) == 4
    assert items(wrapped["validate"]) == seen[0]
    assert (len(wrapped["train"]), wrapped["train"].size) == (1, 4)
    assert DebugBatches(empty, None, replay).empty  # a split the config left empty stays empty


def test_step_hooks_run_once_after_each_batch() -> None:
    wrapped, steps = DebugBatches(split_batches(10, 4)), []
    wrapped.step_hooks.append(lambda: steps.append(len(steps)))
    for i, _ in enumerate(wrapped):
        assert len(steps) == i  # the hook of a batch runs after the loop is done with it
    assert len(steps) == 3


def test_wrap_tags_a_debug_run_with_what_it_changed() -> None:
    tracker = FakeTracker()
    wrapped = debug.wrap(
        train_cfg(limit_batches=2, overfit_batches=1),
        {"train": split_batches(), "test": split_batches()},
        tracker,
    )
    assert tracker.tags == {tags.DEBUG: "train.limit_batches=2 train.overfit_batches=1"}
    assert [type(m) for m in tracker.mirrors] == [LossHistory]
    assert items(wrapped["test"]) == items(wrapped["train"])  # tested on the memorised batch


def check(losses: list[float], n: int = 1) -> None:
    tracker = FakeTracker()
    history = LossHistory()
    tracker.mirrors.append(history)
    for epoch, loss in enumerate(losses):
        history({"train/loss": loss, "epoch": epoch + 1}, epoch)
        history({"train/loss_step": 99.0}, epoch)  # step logs are not the epoch's loss

    class State:
        epoch = len(losses)

    debug.check_overfit(train_cfg(overfit_batches=n), State(), tracker)


def test_the_overfit_check_passes_a_loss_that_fell_near_zero_and_fails_one_that_did_not() -> None:
    check([2.0, 0.5, 2.0 * OVERFIT_RATIO])
    with pytest.raises(HyraxError) as err:
        check([2.0, 1.0, 0.5])
    assert err.value.key == "train.overfit_batches"
    assert "from 2 (epoch 1) to 0.5 (epoch 3)" in err.value.message and err.value.fix
    check([-1.0, -0.5])  # a loss that can be negative is no case for a ratio: skipped
    check([2.0, 1.0], n=0)  # off


def test_the_profile_schedule_fits_short_runs() -> None:
    assert schedule_for(None) == schedule_for(25) == (1, 1, 3)
    assert schedule_for(3) == (0, 1, 2)
    assert schedule_for(1) == (0, 0, 1)


@pytest.mark.parametrize("key,value", [("limit_batches", 0), ("overfit_batches", -1)])
def test_debug_settings_out_of_range_are_one_error(key: str, value: int) -> None:
    with pytest.raises(HyraxError, match=f"train.{key} must be"):
        check_ranges({"train": {**train_cfg(), key: value}})


def test_help_lists_the_presets_without_importing_torch() -> None:
    code = "import sys; from hyrax.help import help_text; print(help_text()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "  debug: fast, overfit, profile" in out
    for preset in ("fast", "overfit", "profile"):
        assert f"  debug={preset}: " in out
    assert out.strip().endswith("False"), "hyrax-run --help imported torch"


# ---- real hyrax-run runs -----------------------------------------------------------------------


@pytest.mark.slow
def test_fast_runs_one_batch_of_each_split_and_keeps_only_a_tagged_run(hyrax_run) -> None:
    proc = ok(hyrax_run("debug=fast", *COUNTING))
    assert calls(proc.cwd) == {"train": [64], "validate": [64], "test": [64]}
    [run] = mlflow_runs(proc.cwd)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tags.DEBUG] == "fast: train.limit_batches=1"
    assert not [k for k in run.data.metrics if k.startswith("system/")]
    [run_dir] = run_dirs(proc.cwd)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "tensorboard").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{proc.cwd}/mlflow.db")
    assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) == 1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} <= {"config", "requirements.txt"}


@pytest.mark.slow
def test_limit_batches_set_directly_limits_and_tags_without_a_preset(hyrax_run) -> None:
    proc = ok(hyrax_run(*COUNTING, "train.limit_batches=2", "train.epochs=2", "mlflow.system_metrics=false"))
    assert calls(proc.cwd) == {"train": [64] * 4, "validate": [64] * 4, "test": [64] * 2}
    [run] = mlflow_runs(proc.cwd)
    assert run.data.tags[tags.DEBUG] == "train.limit_batches=2"


@pytest.mark.slow
def test_fast_works_in_a_multirun(hyrax_run) -> None:
    proc = ok(hyrax_run("-m", "debug=fast", "optimizer.lr=1e-3,1e-2"))
    _, children = parent_and_children(mlflow_runs(proc.cwd))
    assert len(children) == 2
    assert {r.data.tags[tags.DEBUG] for r in children} == {"fast: train.limit_batches=1"}
    assert not list(proc.cwd.glob("multiruns/**/*.pt"))


def test_an_unknown_preset_is_one_error_listing_the_presets(hyrax_run) -> None:
    stderr = user_error(hyrax_run("debug=xyz"), "Could not find 'debug/xyz'", "fast", "overfit", "profile")
    assert "dotted class path" not in stderr


@pytest.mark.slow
def test_overfit_memorises_one_batch_of_an_easy_task(hyrax_run) -> None:
    proc = ok(hyrax_run("debug=overfit"))
    [run] = mlflow_runs(proc.cwd)
    losses = metric_history(proc.cwd, run.info.run_id, "train/loss")
    assert len(losses) == 100
    assert losses[-1] <= OVERFIT_RATIO * losses[0], losses
    assert run.data.tags[tags.DEBUG] == "overfit: train.overfit_batches=1"
    assert "overfit check passed" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_overfit_fails_loudly_when_the_model_cannot_learn(hyrax_run) -> None:
    proc = hyrax_run("debug=overfit", "optimizer.lr=0", "train.epochs=3")
    stderr = user_error(
        proc,
        "Error in train.overfit_batches",
        "(epoch 1) to",
        "(epoch 3)",
        "Fix:",
    )
    first, last = (float(v) for v in _between(stderr, "went from ", " (epoch 1) to ", " (epoch 3)"))
    assert first == last > 0  # no learning at all: the loss did not move
    [run] = mlflow_runs(proc.cwd)
    assert run.info.status == "FAILED"


def _between(text: str, start: str, middle: str, end: str) -> tuple[str, str]:
    after = text.split(start, 1)[1]
    first, rest = after.split(middle, 1)
    return first, rest.split(end, 1)[0]


@pytest.mark.slow
def test_profile_writes_a_chrome_trace_and_logs_it(hyrax_run) -> None:
    proc = ok(hyrax_run("debug=profile"))
    [run_dir] = run_dirs(proc.cwd)
    trace = json.loads((run_dir / "profile" / "trace.json").read_text())
    steps = {e["name"] for e in trace["traceEvents"] if str(e.get("name", "")).startswith("ProfilerStep#")}
    assert steps == {"ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4"}  # wait 1, warm up 1, record 3
    assert "aten::" in (run_dir / "profile" / "top_ops.txt").read_text()
    [run] = mlflow_runs(proc.cwd)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{proc.cwd}/mlflow.db")
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "profile")}
    assert logged == {"profile/trace.json", "profile/top_ops.txt"}
