"""How busy an asynchronous Optuna sweep keeps its slots when trials are of uneven length.

Run:  .venv/bin/python benchmarks/async_sweep.py [--trials 8] [--short 1] [--long 4] [--samples 200000]

One real `hyrax-run -m hydra/sweeper=optuna hydra/launcher=pool hydra.launcher.n_workers=2
hydra.sweeper.n_jobs=2` sweep in a fresh temp dir. Its trials train `model=mlp` for `--short` or
`--long` epochs: the trials are queued (`enqueue_trials`) as long, short, short, short, long, ...
so that a sweep waiting for the slowest trial of each pair would idle a slot for most of every long
trial. `optimizer.lr` is searched as usual.

- the trials' own time: the sum of the child MLflow runs' durations (each job's body);
- the busy span: from the first trial's run start to the last trial's run end (MLflow's timestamps:
  the workers' one-off start-up before the first trial is left out);
- efficiency = trials' own time / (sweep loop x n_jobs): the share of the slots' time spent training.
  Target >= 0.9.
- for comparison, the same trial durations run as batches of n_jobs behind a barrier (what the
  official hydra-optuna-sweeper does): sum over batches of the slowest trial; its efficiency is
  computed, not run.

Exit status 0 unless the sweep fails to run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import child_spans, hyrax_run, row, timed, verdict

TARGET_EFFICIENCY = 0.9
N_JOBS = 2


def pattern(trials: int, short: int, long: int) -> list[int]:
    """Epochs of each trial: long, short, short, short, long, ..."""
    return [long if i % 4 == 0 else short for i in range(trials)]


def run_sweep(workdir: Path, trials: int, epochs: list[int], samples: int) -> tuple[float, Path]:
    """The sweep, in `workdir`: (wall seconds of the command, sweep dir)."""
    workdir.mkdir(parents=True)
    queued = ",".join(f"{{train.epochs:{e}}}" for e in epochs)
    cmd = [
        hyrax_run(),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/launcher=pool",
        f"hydra.launcher.n_workers={N_JOBS}",
        f"hydra.sweeper.n_jobs={N_JOBS}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.study_name=bench",
        f"hydra.sweep.dir={workdir / 'sweep'}",
        "optimizer.lr=tag(log,interval(1e-4,1e-1))",
        f"train.epochs=choice({min(epochs)},{max(epochs)})",
        f"hydra.sweeper.enqueue_trials=[{queued}]",
        "model=mlp",
        f"data_set.n_samples={samples}",
        "train.progress=false",
    ]
    return timed(cmd, workdir), workdir / "sweep"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--short", type=int, default=1, help="epochs of a short trial")
    parser.add_argument("--long", type=int, default=4, help="epochs of a long trial")
    parser.add_argument(
        "--samples", type=int, default=200000, help="data_set.n_samples (sets an epoch's time)"
    )
    args = parser.parse_args()
    epochs = pattern(args.trials, args.short, args.long)
    with tempfile.TemporaryDirectory(prefix="hyrax-async-bench-") as tmp_name:
        wall, sweep_dir = run_sweep(Path(tmp_name) / "pool", args.trials, epochs, args.samples)
        spans = child_spans(sweep_dir)
    durations = [end - start for start, end in (spans[n] for n in sorted(spans))]
    loop = max(end for _, end in spans.values()) - min(start for start, _ in spans.values())
    own = sum(durations)
    efficiency = own / (loop * N_JOBS)
    barrier = sum(max(durations[i : i + N_JOBS]) for i in range(0, len(durations), N_JOBS))
    print(
        f"Asynchronous Optuna sweep, pool launcher, n_jobs={N_JOBS}: {args.trials} trials of model=mlp, "
        f"{args.samples} samples, epochs {epochs}"
    )
    row("whole command", f"{wall:.2f} s")
    row("trial durations (child runs)", " ".join(f"{d:.1f}" for d in durations))
    row("trials' own time", f"{own:.2f} s")
    row("busy span (first run start .. last end)", f"{loop:.2f} s")
    row(
        "efficiency",
        f"{efficiency:.2f}",
        f"target >= {TARGET_EFFICIENCY}  {verdict(efficiency >= TARGET_EFFICIENCY)}",
    )
    row("batch barrier, same trials (computed)", f"{own / (barrier * N_JOBS):.2f}", f"loop {barrier:.2f} s")
    print(f"  1-min load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
