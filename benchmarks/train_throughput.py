"""Training throughput of hyrax's loop against a hand-written PyTorch loop and the compute floor.

What it measures, in one run (all on CPU, torch's default thread count):

  (a) hyrax     the real `hyrax-run` console script, MLflow logging on (SQLite store in a temp dir);
                steps/s come from the `samples_per_s` metric hyrax logs each epoch.
  (b) hand      a plain PyTorch loop over DataLoader(TensorDataset(x, y), batch_size, shuffle=True).
  (c) floor     the same step over batches sliced before timing (random order): model compute only.

Task: an MLP 784-256-10 (one hidden layer of 256) on `--samples` random float32 inputs with 10
integer classes, batch 128, Adam lr 1e-3, cross entropy. Each contender trains `--epochs` epochs;
the first is a warm-up and the median steps/s of the others is reported. It also times
`hyrax-run --help` (median of 5 runs). Targets are printed with PASS/MISS, not asserted: the exit
status is 0 unless something fails to run.

Run:  make bench    (= .venv/bin/python benchmarks/train_throughput.py [--epochs 4] [--samples 60000])
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import hyrax_run, print_load, verdict

FEATURES, HIDDEN, CLASSES, BATCH, LR = 784, 256, 10, 128, 1e-3
TARGET_VS_HAND, TARGET_VS_FLOOR, TARGET_HELP_S = 1.0, 0.9, 0.5


def bench_hyrax(exe: str, data: Path, tmp: Path, epochs: int, samples: int) -> float:
    """Median steps/s of `hyrax-run` over epochs 2..E, read from the MLflow store it wrote."""
    cmd = [
        exe,
        "data_set=numpy",
        f"data_set.path={data}",
        "model=mlp",
        f"model.hidden={HIDDEN}",
        "model.depth=1",
        f"train.batch_size={BATCH}",
        f"train.epochs={epochs}",
        "train.split.train=1.0",
        "train.split.validate=0",
        "train.split.test=0",
        "train.progress=false",
        "train.seed=0",
        # With no validate split the default objective (val/loss) is never measured and the run fails.
        "train.objective.metric=train/loss",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # use <tmp>/mlflow.db
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"hyrax-run failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    if len(runs) != 1 or runs[0].info.status != "FINISHED":
        sys.exit(f"expected one FINISHED MLflow run, found {[r.info.status for r in runs]}")
    history = sorted(client.get_metric_history(runs[0].info.run_id, "samples_per_s"), key=lambda m: m.step)
    if len(history) != epochs:
        sys.exit(f"expected {epochs} samples_per_s values, MLflow has {len(history)}")
    # samples/s -> steps/s: an epoch is ceil(n / batch) steps (the last one partial).
    steps_per_sample = math.ceil(samples / BATCH) / samples
    return statistics.median(m.value * steps_per_sample for m in history[1:])


def make_model() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
    return model, torch.optim.Adam(model.parameters(), lr=LR), nn.CrossEntropyLoss()


def timed_epochs(epochs: int, run_epoch) -> float:
    """Median steps/s of `run_epoch()` (which returns its step count) over epochs 2..E."""
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        steps = run_epoch()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def bench_hand(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """A typical hand-written loop: DataLoader with shuffling, loss read back every step."""
    model, opt, loss_fn = make_model()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    def epoch() -> int:
        steps, total = 0, 0.0
        model.train()
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        return steps

    return timed_epochs(epochs, epoch)


def bench_floor(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """Only the model's work: batches gathered in a random order before the clock starts."""
    model, opt, loss_fn = make_model()
    order = torch.randperm(len(x))
    batches = [(x[i], y[i]) for i in order.split(BATCH)]

    def epoch() -> int:
        for xb, yb in batches:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(batches)

    return timed_epochs(epochs, epoch)


def bench_help(exe: str, runs: int = 5) -> float:
    """Median wall time of `hyrax-run --help`, a fresh process each time."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, "--help"], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per contender, the first a warm-up")
    parser.add_argument("--samples", type=int, default=60_000, help="training samples")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is a warm-up)")

    exe = hyrax_run()
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.samples, FEATURES), dtype=np.float32)
    y_np = rng.integers(0, CLASSES, args.samples, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="hyrax-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "train.npz"
        np.savez(data, x=x_np, y=y_np)
        hyrax = bench_hyrax(exe, data, tmp, args.epochs, args.samples)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    hand = bench_hand(x, y, args.epochs)
    floor = bench_floor(x, y, args.epochs)
    help_s = bench_help(exe)
    load_after = os.getloadavg()[0]

    print(
        f"MLP {FEATURES}-{HIDDEN}-{CLASSES}, {args.samples} samples, batch {BATCH}, Adam, CPU "
        f"({torch.get_num_threads()} threads), {args.epochs} epochs (first is warm-up), median steps/s"
    )
    print(f"  (a) hyrax-run, MLflow on       {hyrax:8.1f} steps/s")
    print(f"  (b) hand-written DataLoader    {hand:8.1f} steps/s")
    print(f"  (c) floor, pre-sliced batches  {floor:8.1f} steps/s")
    print(
        f"  hyrax / hand-written           {hyrax / hand:8.2f}x   target >= {TARGET_VS_HAND:.1f}x  "
        f"{verdict(hyrax / hand >= TARGET_VS_HAND)}"
    )
    print(
        f"  hyrax / floor                  {hyrax / floor:8.2f}x   target >= {TARGET_VS_FLOOR:.1f}x  "
        f"{verdict(hyrax / floor >= TARGET_VS_FLOOR)}"
    )
    print(
        f"  hyrax-run --help (median of 5) {help_s:8.3f} s    target <  {TARGET_HELP_S:.1f} s   "
        f"{verdict(help_s < TARGET_HELP_S)}"
    )
    # torch's threads spin-wait for each other: other busy processes on the cores skew these numbers.
    print_load(load_before, load_after)


if __name__ == "__main__":
    main()
