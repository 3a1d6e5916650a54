"""Data-parallel training on CPU (gloo, 2 ranks): one run, the same weights on every rank, every sample
once per epoch, rank 0's pruning reaching rank 1, and a resume after SIGKILL that restores both.

The ranks note what they did in files (tests/ddppkg): the positions each trained on, and a checksum
of the weights each time it evaluates.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import optuna
import psutil
import pytest
import torch
from ddppkg import IndexedData, IndexedStream, PositionNet, WeightNet
from hypothesis import given, settings
from hypothesis import strategies as st
from hyraxtest import (
    HYRAX_RUN,
    log_text,
    metric_history,
    mlflow_runs,
    ok,
    parent_and_children,
    run_hyrax,
    started,
    wait_until,
)

from hyrax.data_sets import InMemoryDataset
from hyrax.data_sets.batches import Batches, rank_order, split_indices, split_of_position
from hyrax.data_sets.builtin import SyntheticClassification
from hyrax.data_sets.items import make_converter
from hyrax.search.storage import open_storage

TWO = ["train.devices=2", "train.device=cpu", "mlflow.system_metrics=false", "train.tensorboard=false"]


def noted(out: Path, kind: str, rank: int) -> list[str]:
    path = out / f"{kind}_rank{rank}.txt"
    return path.read_text().split("\n")[:-1] if path.is_file() else []


def distinct(values: list[str]) -> list[str]:
    """Consecutive repeats dropped: one checksum per evaluation pass."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


def env_with_out(out: Path) -> dict[str, str]:
    from hyraxtest import hyrax_env

    out.mkdir(exist_ok=True)
    return hyrax_env({"HYRAX_TEST_OUT": str(out)})


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 300),
    batch_size=st.integers(1, 17),
    world=st.integers(1, 4),
    shuffle=st.booleans(),
    seed=st.integers(0, 10),
)
def test_rank_order_deals_every_position_to_exactly_one_rank(n, batch_size, world, shuffle, seed):
    orders = [
        rank_order(n, batch_size, r, world, shuffle, torch.Generator().manual_seed(seed)).tolist()
        for r in range(world)
    ]
    assert sorted(p for order in orders for p in order) == list(range(n))
    steps = math.ceil(n / (batch_size * world))
    assert all(math.ceil(len(order) / batch_size) <= steps for order in orders)
    # rank r's k-th batch comes from the k-th global batch of the epoch's order
    whole = rank_order(n, batch_size * world, 0, 1, shuffle, torch.Generator().manual_seed(seed)).tolist()
    for order in orders:
        for k in range(0, len(order), batch_size):
            glob = set(whole[(k // batch_size) * batch_size * world :][: batch_size * world])
            assert set(order[k : k + batch_size]) <= glob


@pytest.mark.parametrize("kind", ["in_memory", "map", "iterable"])
def test_sharded_splits_give_each_rank_its_own_items(kind):
    n, fractions, seed = 89, {"train": 0.8, "validate": 0.1, "test": 0.1}, 3
    if kind == "in_memory":
        x = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], torch.randn(n, 4)], dim=1)
        items = InMemoryDataset(x, torch.arange(n) % 3)
    else:
        items = (IndexedData if kind == "map" else IndexedStream)(None, n=n)
    iterable = kind == "iterable"
    indices = None if iterable else split_indices(n, fractions, seed)["train"]
    convert = make_converter(PositionNet, items[0] if not iterable else next(iter(items)), None)
    seen: list[list[int]] = []
    for rank in range(2):
        batches = Batches(
            items,
            indices,
            7,
            True,
            seed,
            convert,
            iterable_split=("train", fractions) if iterable else None,
            fast=kind == "in_memory",
        )
        batches.shard(rank, 2)
        batches.set_epoch(1)
        seen.append([int(p) for batch in batches for p in batch[0][:, 0].tolist()])
    expected = (
        [i for i in range(n) if split_of_position(i, fractions, seed) == "train"]
        if iterable
        else list(indices)
    )
    assert sorted(seen[0] + seen[1]) == sorted(expected)
    assert not set(seen[0]) & set(seen[1]) and seen[0] and seen[1]


def _test_split_loss(run_dir: Path, n: int) -> tuple[float, float]:
    """The test split's loss and accuracy of the run's best checkpoint, computed here in one process."""
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    model = WeightNet()
    model.load_state_dict(state["model"])
    data = SyntheticClassification(n_samples=n)
    test = torch.as_tensor(split_indices(n, {"train": 0.8, "validate": 0.1, "test": 0.1}, 42)["test"])
    with torch.no_grad():
        output = model.eval().net(data.x[test])
    loss = torch.nn.functional.cross_entropy(output, data.y[test])
    return float(loss), float((output.argmax(1) == data.y[test]).float().mean())


@pytest.mark.slow
def test_two_ranks_train_one_run_with_the_same_weights_and_reduced_metrics(tmp_path):
    out = tmp_path / "notes"
    proc = ok(
        run_hyrax(
            [*TWO, "model=ddppkg.WeightNet", "data_set.n_samples=800", "train.epochs=3", "optimizer.lr=0.01"],
            tmp_path,
            env_with_out(out),
        )
    )
    [run] = mlflow_runs(tmp_path)  # one run, not one per rank
    assert run.info.status == "FINISHED"
    assert run.data.params["train.devices"] == "2" and run.data.tags["hyrax.ranks"] == "2"
    losses = metric_history(tmp_path, run.info.run_id, "train/loss")
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.8, losses
    rank0, rank1 = distinct(noted(out, "weights", 0)), distinct(noted(out, "weights", 1))
    assert len(rank0) >= 3 and rank0 == rank1, (rank0, rank1)
    [run_dir] = list((tmp_path / "runs").glob("*/*"))
    loss, accuracy = _test_split_loss(run_dir, 800)
    assert run.data.metrics["test/loss"] == pytest.approx(loss, rel=1e-5)
    assert run.data.metrics["test/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert "started 1 more ranks" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("data_set", ["ddppkg.IndexedData", "ddppkg.IndexedStream"])
def test_an_epoch_of_two_ranks_sees_each_sample_exactly_once(tmp_path, data_set):
    # 89 items: a train split of 71, in global batches of 2 x 7: the last has one item, so rank 1
    # takes an empty step there while rank 0's train_step steps the optimizer.
    out = tmp_path / "notes"
    ok(
        run_hyrax(
            [
                *TWO,
                "model=ddppkg.PositionNet",
                f"data_set={data_set}",
                "data_set.n=89",
                "train.batch_size=7",
                "train.epochs=1",
                "mlflow.enabled=false",
            ],
            tmp_path,
            env_with_out(out),
        )
    )
    seen = [[int(p) for line in noted(out, "seen", r) for p in line.split()] for r in range(2)]
    fractions = {"train": 0.8, "validate": 0.1, "test": 0.1}
    if data_set.endswith("Stream"):
        expected = [i for i in range(89) if split_of_position(i, fractions, 42) == "train"]
    else:
        expected = split_indices(89, fractions, 42)["train"].tolist()
    assert sorted(seen[0] + seen[1]) == sorted(expected)
    assert not set(seen[0]) & set(seen[1])
    assert distinct(noted(out, "weights", 0)) == distinct(noted(out, "weights", 1))


@pytest.mark.slow
def test_a_pruned_ddp_trial_is_one_trial_and_stops_both_ranks(tmp_path):
    # Trials 0 and 1 learn; 2 and 3 barely move and the median pruner stops them after one epoch.
    sweep_dir = tmp_path / "multiruns" / "prune"
    proc = ok(
        run_hyrax(
            [
                "-m",
                *TWO,
                "hydra/sweeper=optuna",
                "hydra/sweeper/pruner=median",
                "hydra.sweeper.pruner.n_startup_trials=2",
                "hydra.sweeper.n_trials=4",
                "hydra.sweeper.enqueue_trials=[{optimizer.lr:0.05},{optimizer.lr:0.06},"
                "{optimizer.lr:1e-7},{optimizer.lr:2e-7}]",
                "optimizer.lr=tag(log, interval(1e-8, 1e-1))",
                "optimizer=sgd",
                "data_set.n_samples=400",
                "train.epochs=3",
                f"hydra.sweep.dir={sweep_dir}",
            ],
            tmp_path,
            timeout=400,
        )
    )
    opened = open_storage(str(sweep_dir / "optuna.journal"))
    [summary] = optuna.get_all_study_summaries(opened)
    study = optuna.load_study(study_name=summary.study_name, storage=opened)
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "PRUNED"}, (states, proc.stdout[-3000:])
    [_parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert len(children) == 4  # one child per trial, not per rank
    by_trial = {int(c.data.tags["hyrax.trial_number"]): c for c in children}
    assert {n: by_trial[n].info.status for n in by_trial} == {
        0: "FINISHED",
        1: "FINISHED",
        2: "KILLED",
        3: "KILLED",
    }
    output = proc.stdout + proc.stderr
    assert output.count("rank 1: rank 0 stopped the run") == 2, output[-3000:]


def _rank_processes(out: Path) -> list[psutil.Process]:
    """The started ranks (not rank 0) of runs noting into `out`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "hyrax.train.ddp" in " ".join(process.info["cmdline"] or []) and process.environ().get(
                "HYRAX_TEST_OUT"
            ) == str(out):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.slow
def test_resume_after_sigkill_restores_every_rank(tmp_path):
    out = tmp_path / "notes"
    args = [*TWO, "model=ddppkg.WeightNet", "data_set.n_samples=6000", "train.epochs=6", "optimizer.lr=0.003"]
    log = tmp_path / "first.log"
    with started([HYRAX_RUN, *args], tmp_path, log, env_with_out(out)) as proc:
        wait_until(lambda: "epoch 2/6" in log_text(log), 240, log)
        assert _rank_processes(out), "rank 1 should be running"
        proc.send_signal(signal.SIGKILL)  # rank 0 only: rank 1 must die with it
        proc.wait()
        wait_until(lambda: not _rank_processes(out), 30, log)
    [run_dir] = list((tmp_path / "runs").glob("*/*"))
    done = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["loop"]["epoch"]
    assert 2 <= done < 6
    before = len(distinct(noted(out, "weights", 1)))
    ok(run_hyrax([*args, f"train.resume={run_dir}"], tmp_path, env_with_out(out)))
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    epochs = metric_history(tmp_path, run.info.run_id, "epoch")
    assert max(epochs) == 6 and sorted(set(epochs)) == [1, 2, 3, 4, 5, 6]
    # After the resume both ranks evaluate the same weights at every epoch: rank 1 restored the
    # model and Adam's moments from the checkpoint (fresh moments would make it drift from rank 0).
    rank0, rank1 = distinct(noted(out, "weights", 0)), distinct(noted(out, "weights", 1))
    assert len(rank1) > before and rank0[-(6 - done) :] == rank1[-(6 - done) :]
    assert np.isfinite(run.data.metrics["test/loss"])


@pytest.mark.slow
def test_a_crash_on_one_rank_fails_the_run_naming_that_rank(tmp_path):
    out = tmp_path / "notes"
    proc = run_hyrax(
        [*TWO, "model=ddppkg.RankCrash", "data_set=ddppkg.IndexedData", "train.batch_size=8"],
        tmp_path,
        env_with_out(out),
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "ValueError: user bug on rank 1" in output  # the user's own traceback, from rank 1
    assert "rank 1 of this data-parallel job failed (exit code 1)" in output
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED" and "rank 1" in run.data.tags["hyrax.error"]
    assert not _rank_processes(out)


def test_rank_settings_that_cannot_work_are_refused_naming_the_key(tmp_path, monkeypatch):
    from hyrax.errors import HyraxError
    from hyrax.train import ddp
    from hyrax.train.components import pick_device

    with pytest.raises(HyraxError, match="2 ranks need 2 GPUs, and 0 are visible") as err:
        ddp.check_devices(2, "cuda")  # this machine has no GPU
    assert err.value.key == "train.devices"
    with pytest.raises(HyraxError, match="runs on CUDA GPUs or CPUs, not mps") as err:
        ddp.check_devices(2, "mps")
    assert err.value.fix == "use train.devices=1, or train.device=cpu"
    with pytest.raises(HyraxError, match="device '2' is not available") as err:
        pick_device("2")
    assert err.value.key == "train.device" and "train.devices=2" in err.value.fix
    # inside a Slurm step of two tasks each task is a rank: train.devices=2 on top is refused
    for name, value in {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": "7"}.items():
        monkeypatch.setenv(name, value)
    config = {"train": {"devices": 2}}
    refused = pytest.raises(HyraxError, match="inside a Slurm step of 2 tasks: each task is a rank")
    with refused as err, ddp.started_ranks(config, tmp_path, []):
        pass
    assert err.value.key == "train.devices" and "tasks_per_node=N" in err.value.fix
