"""Whole-process cost of `hyrax-run` against the same training written by hand and under Lightning.

Each contender is a fresh process, timed from its start to its exit, with its own CPU time and peak
resident memory (`os.wait4` on the child: its `ru_maxrss`, not the maximum over all children):

  (a) hyrax      `hyrax-run model=mlp model.hidden=256 model.depth=1 data_set=numpy data_set.path=...`,
                 every default on (MLflow with system metrics, TensorBoard, checkpoints, provenance)
  (b) hand       `benchmarks/reference_by_hand.py`: torch + MLflow, written as a careful user would
  (c) lightning  `benchmarks/reference_lightning.py`: a LightningModule, `Trainer` and `MLFlowLogger`
                 (skipped, with a note, when pytorch_lightning is not importable)

The task: an MLP 784-256-10 on 60,000 in-memory samples of a `.npz` file (float32 x, int64 y in 0..9,
class-dependent means), 3 epochs, batch size `train.batch_size`'s default (64), Adam lr 1e-3, an
80/10/10 split, validation every epoch, metrics to an SQLite MLflow store. Every process runs in a
directory of its own with a copy of one prepared store (tables created, no runs), so none of them pays
for creating MLflow's tables. The contenders run interleaved, in a rotating order, `--repeats` times;
the medians and the ratios hyrax/hand and lightning/hand are printed with the targets (not asserted).

Run:  .venv/bin/python benchmarks/whole_process.py [--quick] [--repeats 3] [--threads 1]
(`--threads 1` on a busy machine: torch's threads spin-wait on each other when a core is taken away.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import hyrax_run, print_load, verdict

HERE = Path(__file__).resolve().parent
FEATURES, HIDDEN, CLASSES, BATCH, SEED = 784, 256, 10, 64, 42
TARGET_MEMORY, TARGET_WALL = 1.10, 1.03  # hyrax / hand-written


@dataclass
class Sample:
    """One finished process: its wall time (s), CPU time (user + system, s) and own peak memory (MiB)."""

    wall_s: float
    cpu_s: float
    peak_mib: float


def make_data(path: Path, samples: int) -> None:
    """A learnable classification task: each class's inputs are noise around a class mean."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES, samples, dtype=np.int64)
    means = rng.standard_normal((CLASSES, FEATURES), dtype=np.float32) * 0.05
    x = rng.standard_normal((samples, FEATURES), dtype=np.float32)
    x += means[y]
    np.savez(path, x=x, y=y)


def make_store(path: Path) -> None:
    """An SQLite MLflow store with its tables created (in a child process: this one stays small)."""
    code = (
        "import sys; from mlflow.tracking import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
    )
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{path}"], check=True, capture_output=True)


def commands(data: Path, epochs: int) -> dict[str, list[str]]:
    """Each contender's command line; `{uri}` stands for its store's tracking URI."""
    common = ["--data", str(data), "--tracking-uri", "{uri}", "--epochs", str(epochs)]
    common += ["--batch-size", str(BATCH), "--hidden", str(HIDDEN), "--seed", str(SEED)]
    found = {
        "hyrax": [
            hyrax_run(),
            "model=mlp",
            f"model.hidden={HIDDEN}",
            "model.depth=1",
            "data_set=numpy",
            f"data_set.path={data}",
            f"train.epochs={epochs}",
            f"train.batch_size={BATCH}",
            f"train.seed={SEED}",
            "train.progress=false",
        ],
        "hand": [sys.executable, str(HERE / "reference_by_hand.py"), *common],
    }
    if find_spec("pytorch_lightning") is not None:
        found["lightning"] = [sys.executable, str(HERE / "reference_lightning.py"), *common]
    return found


def run_one(name: str, command: list[str], store: Path, work: Path, threads: int | None) -> Sample:
    """Run `command` in a fresh directory with a copy of the prepared store; its wall time and peak RSS."""
    work.mkdir(parents=True)
    shutil.copy(store, work / "mlflow.db")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    argv = [part.replace("{uri}", uri) for part in command]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if threads is not None:  # torch's intra-op threads (OpenMP)
        env["OMP_NUM_THREADS"] = str(threads)
    with (work / "out.log").open("w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if child.returncode != 0:
        sys.exit(f"{name} failed ({child.returncode}):\n{(work / 'out.log').read_text()[-4000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)  # maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 1 epoch on 20,000 samples")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every contender (median reported)")
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only these contenders (hyrax, hand, lightning)")
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS of every contender (default: torch's choice); 1 is steadier on a busy machine",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.samples, args.epochs = 1, 20_000, 1

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hyrax-whole-") as tmp_name:
        tmp = Path(tmp_name)
        data, store = tmp / "data.npz", tmp / "store.db"
        make_data(data, args.samples)
        make_store(store)
        todo = commands(data, args.epochs)
        if args.only:
            todo = {k: v for k, v in todo.items() if k in args.only}
        results: dict[str, list[Sample]] = {name: [] for name in todo}
        names = list(todo)
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                sample = run_one(name, todo[name], store, tmp / f"{name}-{r}", args.threads)
                results[name].append(sample)
                print(
                    f"  round {r + 1}  {name:<10} {sample.wall_s:7.2f} s  {sample.cpu_s:7.2f} s CPU  "
                    f"{sample.peak_mib:7.0f} MiB",
                    flush=True,
                )
    load_after = os.getloadavg()[0]

    print(
        f"\nMLP {FEATURES}-{HIDDEN}-{CLASSES}, {args.samples} samples (.npz), batch {BATCH}, Adam, "
        f"{args.epochs} epoch(s), 80/10/10 split, MLflow (SQLite); whole processes, median of {args.repeats}"
    )
    print(f"  {'contender':<12}{'wall s':>9}{'CPU s':>9}{'peak MiB':>11}   (every round: wall s / MiB)")
    median = {
        name: Sample(
            statistics.median(s.wall_s for s in got),
            statistics.median(s.cpu_s for s in got),
            statistics.median(s.peak_mib for s in got),
        )
        for name, got in results.items()
    }
    for name, got in results.items():
        rounds = "  ".join(f"{s.wall_s:.2f}/{s.peak_mib:.0f}" for s in got)
        m = median[name]
        print(f"  {name:<12}{m.wall_s:9.2f}{m.cpu_s:9.2f}{m.peak_mib:11.0f}   {rounds}")
    if "lightning" not in todo and (not args.only or "lightning" in args.only):
        print("  lightning   skipped: pytorch_lightning is not importable")
    if "hand" in median:
        base = median["hand"]
        if "hyrax" in median:
            wall, memory = median["hyrax"].wall_s / base.wall_s, median["hyrax"].peak_mib / base.peak_mib
            cpu = median["hyrax"].cpu_s / base.cpu_s
            print(
                f"  hyrax / hand      wall {wall:5.2f}x  target <= {TARGET_WALL:.2f}x  "
                f"{verdict(wall <= TARGET_WALL)}"
            )
            print(f"  hyrax / hand      CPU  {cpu:5.2f}x")
            print(
                f"  hyrax / hand      peak {memory:5.2f}x  target <= {TARGET_MEMORY:.2f}x  "
                f"{verdict(memory <= TARGET_MEMORY)}"
            )
        if "lightning" in median:
            wall, memory = (
                median["lightning"].wall_s / base.wall_s,
                median["lightning"].peak_mib / base.peak_mib,
            )
            print(f"  lightning / hand  wall {wall:5.2f}x  peak {memory:5.2f}x")
    print_load(load_before, load_after)


if __name__ == "__main__":
    main()
