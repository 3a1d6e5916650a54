"""What an Optuna sweep costs on top of its trials' own training, and what n_jobs=2 buys.

Run:  .venv/bin/python benchmarks/sweep_overhead.py [--trials 20] [--parallel-trials 10] [--epochs 2]

Each sweep is the real `hyrax-run -m hydra/sweeper=optuna ...` in a fresh temp dir (cwd there, so
mlflow.db and multiruns/ land in it; MLFLOW_TRACKING_URI is dropped), training `model=linear` on 512
synthetic samples for `--epochs` epochs per trial, MLflow on, RandomSampler seeded, over optimizer.lr.

- sweep loop: from the first trial's start to the last trial's end, read from the Optuna study
  (the journal in the sweep dir). Process start-up, composition, the MLflow parent run and the plots
  are outside it and printed apart as "fixed".
- the trials' own time: the sum of each child MLflow run's end_time - start_time (the job body from
  opening its run to closing it: building data and model, the epochs, checkpoints, the final test,
  artifacts), from MLflow rather than the job logs: a job's log has no line when the job starts.
- overhead per trial = (sweep loop - trials' own time) / trials: what Hydra (re-composing the
  config per job, writing .hydra/), the launcher, Optuna's ask/tell on the journal and the
  per-trial MLflow callback add, plus the first job's one-off imports (torch, the training code);
  the median of (next trial's start - this trial's start - its run) leaves those imports out.
- parallel: sweeps of --parallel-trials trials with hydra/launcher=submitit_local at n_jobs=1 and
  n_jobs=2 (every job a new process: Python, torch and MLflow start-up each time), and the basic
  launcher at n_jobs=1 for reference; wall time of the whole command; speedup = n_jobs=1 / n_jobs=2.

Targets (PASS/MISS, not asserted): overhead < 0.5 s per trial, speedup >= 1.6x on 2 cores.
Exit status 0 unless a sweep fails to run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_OVERHEAD_S, TARGET_SPEEDUP = 0.5, 1.6


def hyrax_run() -> str:
    exe = Path(sys.executable).parent / "hyrax-run"
    if not exe.is_file():
        sys.exit("hyrax-run not found next to this interpreter: run with .venv/bin/python (make install)")
    return str(exe)


def sweep(workdir: Path, trials: int, epochs: int, *extra: str) -> tuple[float, Path]:
    """Run one sweep in `workdir`; returns (wall seconds of the command, sweep dir)."""
    workdir.mkdir(parents=True)
    sweep_dir = workdir / "sweep"
    cmd = [
        hyrax_run(),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.study_name=bench",
        f"hydra.sweep.dir={sweep_dir}",
        "optimizer.lr=tag(log,interval(1e-4,1e-1))",
        "model=linear",
        "data_set.n_samples=512",
        f"train.epochs={epochs}",
        "train.progress=false",
        *extra,
    ]
    return timed(cmd, workdir), sweep_dir


def timed(cmd: list[str], workdir: Path) -> float:
    """Run a sweep command in `workdir` (no MLFLOW_TRACKING_URI from outside); its wall seconds.
    A failed sweep ends the benchmark with its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"sweep failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return wall


def trial_starts(sweep_dir: Path) -> tuple[float, dict[int, float]]:
    """(seconds from the first trial's start to the last trial's end, {trial number: start time})."""
    import optuna

    from hyrax.search.storage import open_storage

    study = optuna.load_study(study_name="bench", storage=open_storage(str(sweep_dir / "optuna.journal")))
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    return span.total_seconds(), {t.number: t.datetime_start.timestamp() for t in trials}


def child_spans(sweep_dir: Path) -> dict[int, tuple[float, float]]:
    """{trial number: (start, end) in seconds} of the sweep's finished child MLflow runs (the parent
    run id is in mlflow_parent.json)."""
    from mlflow.tracking import MlflowClient

    from hyrax import tags

    parent = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    client = MlflowClient(tracking_uri=parent["tracking_uri"])
    experiment = client.get_run(parent["run_id"]).info.experiment_id
    children = f"tags.mlflow.parentRunId = '{parent['run_id']}'"
    runs = client.search_runs([experiment], children, max_results=5000)
    return {
        int(r.data.tags[tags.TRIAL_NUMBER]): (r.info.start_time / 1000, r.info.end_time / 1000)
        for r in runs
        if r.info.end_time
    }


def child_seconds(sweep_dir: Path) -> dict[int, float]:
    """{trial number: duration} of the sweep's child MLflow runs."""
    return {number: end - start for number, (start, end) in child_spans(sweep_dir).items()}


def print_load(before: float, after: float) -> None:
    """The 1-min load average around the measurements, flagged when the machine was busy."""
    busy = max(before, after) > 0.5 * (os.cpu_count() or 1)
    print(
        f"  1-min load average {before:.2f} before, {after:.2f} after, on {os.cpu_count()} cores"
        + ("  (busy machine: numbers are noisy)" if busy else "")
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<36}{value:>10}   {note}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials of the overhead sweep")
    parser.add_argument(
        "--parallel-trials",
        type=int,
        default=10,
        help="trials of each submitit_local sweep (every job is a new process: slow)",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-parallel", action="store_true", help="only the in-process overhead sweep")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="hyrax-sweep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        n = args.trials
        wall, sweep_dir = sweep(tmp / "basic", n, args.epochs, "hydra.sweeper.n_jobs=1")
        loop, starts = trial_starts(sweep_dir)
        children = child_seconds(sweep_dir)
        if len(starts) != n or sorted(children) != sorted(starts):
            sys.exit(f"expected {n} trials with a child run each, got {len(starts)} and {len(children)}")
        own = sum(children.values())
        mean = (loop - own) / n
        # Trial i's start to trial i+1's start, less its run: the steady state, without the one-off
        # imports (torch, the training code) that the first job pays and the mean carries.
        median = statistics.median(starts[i + 1] - starts[i] - children[i] for i in range(n - 1))
        print(
            f"Optuna sweep, basic launcher (in-process jobs), n_jobs=1: {n} trials of model=linear, "
            f"512 samples, {args.epochs} epochs, MLflow on (SQLite)"
        )
        row("whole command", f"{wall:.2f} s")
        row(
            "sweep loop (first ask .. last tell)",
            f"{loop:.2f} s",
            f"fixed costs outside it: {wall - loop:.2f} s",
        )
        row("trials' own time (child MLflow runs)", f"{own:.2f} s", f"{own / n:.3f} s per trial")
        row(
            "overhead per trial (mean)",
            f"{mean:.3f} s",
            f"target < {TARGET_OVERHEAD_S} s  {verdict(mean < TARGET_OVERHEAD_S)}",
        )
        row("overhead per trial (median)", f"{median:.3f} s", "steady state: first job's imports left out")

        if not args.skip_parallel:
            m = args.parallel_trials
            submitit = ("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30")
            one, _ = sweep(tmp / "submitit1", m, args.epochs, *submitit, "hydra.sweeper.n_jobs=1")
            two, _ = sweep(tmp / "submitit2", m, args.epochs, *submitit, "hydra.sweeper.n_jobs=2")
            basic, _ = sweep(tmp / "basic_m", m, args.epochs, "hydra.sweeper.n_jobs=1")
            print(f"Parallel trials: {m} trials per sweep, wall time of the whole command")
            row("basic launcher, n_jobs=1", f"{basic:.2f} s")
            row("submitit_local, n_jobs=1", f"{one:.2f} s", f"{one / m:.2f} s per trial, a process each")
            row("submitit_local, n_jobs=2", f"{two:.2f} s")
            row(
                "speedup n_jobs=2 over n_jobs=1",
                f"{one / two:.2f}x",
                f"target >= {TARGET_SPEEDUP}x  {verdict(one / two >= TARGET_SPEEDUP)}",
            )
            row(
                "submitit n_jobs=2 over basic n_jobs=1",
                f"{basic / two:.2f}x",
                "< 1: in-process jobs still win",
            )

    print_load(load_before, os.getloadavg()[0])


if __name__ == "__main__":
    main()
