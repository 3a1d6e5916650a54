"""What `hydra/launcher=pool` costs per job, and what its parallel workers and warm imports buy.

Run:  .venv/bin/python benchmarks/pool_overhead.py [--jobs 30] [--work-s 2] [--trials 20] [--skip-c]

(a) overhead per job: --jobs tiny jobs of a plain Hydra app (tests/poolapp/app.py, action=check: the
    task returns at once) on one worker. Each job writes when its task started and ended, so
    overhead per job = (wall - sum of the tasks' own times) / (jobs - 1), with wall from the first
    task's start to the last task's end (jobs - 1 gaps between them): what the pool adds between two
    jobs (composing the next config, submitting it, Hydra's run_job writing .hydra/ and setting up
    logging, isolating the job, returning its result). Process start-up and the workers' imports
    are printed apart ("fixed").
    Hydra's basic launcher (same app, same jobs, in-process) is printed for reference.
(b) speedup: 4 jobs of ~--work-s seconds of CPU-bound matrix products each (the app's action=work,
    calibrated here on one thread), threads_per_worker=1, n_workers=2 against n_workers=1; wall from
    the first task's start to the last task's end.
(c) a real Optuna search: `hyrax-run -m hydra/sweeper=optuna hydra.sweeper.n_trials=--trials
    hydra.sweeper.n_jobs=2 train.epochs=1 data_set.n_samples=64` with hydra/launcher=pool
    (n_workers=2) against hydra/launcher=local (submitit: a new process per trial); wall time of the
    whole command; ratio = pool / local.

Targets (PASS/MISS, not asserted): (a) <= 0.15 s per job, (b) >= 1.8x, (c) <= 0.5x. Run it on a quiet
machine (2 cores here): other busy processes slow the runs unevenly (the load average is printed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "poolapp" / "app.py"
TARGET_OVERHEAD_S, TARGET_SPEEDUP, TARGET_RATIO = 0.15, 1.8, 0.5


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}


def run(cmd: list[str], cwd: Path) -> float:
    """Run `cmd` in `cwd` to its end; its wall seconds (exits when it fails)."""
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return wall


def app(cwd: Path, *args: str) -> tuple[float, list[dict]]:
    """Run a multirun of the plain app; (command wall, each job's seen.json)."""
    wall = run([sys.executable, str(APP), "-m", *args], cwd)
    return wall, [json.loads(p.read_text()) for p in (cwd / "multirun").glob("*/seen.json")]


def loop_wall(jobs: list[dict]) -> float:
    """From the first task's start to the last task's end."""
    return max(j["end"] for j in jobs) - min(j["start"] for j in jobs)


def overhead(jobs: list[dict]) -> float:
    return (loop_wall(jobs) - sum(j["end"] - j["start"] for j in jobs)) / max(1, len(jobs) - 1)


def median_gap(jobs: list[dict]) -> float:
    """The median time from one task's end to the next task's start."""
    ordered = sorted(jobs, key=lambda j: j["start"])
    return statistics.median(b["start"] - a["end"] for a, b in itertools.pairwise(ordered))


def calibrate(seconds: float) -> int:
    """How many of the app's `work` iterations take `seconds` on one thread here."""
    import torch

    torch.set_num_threads(1)
    a, n, start = torch.randn(256, 256), 0, time.perf_counter()
    while time.perf_counter() - start < 0.5:
        a, n = torch.tanh(a @ a), n + 1
    return max(1, int(n * seconds / (time.perf_counter() - start)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def part_a(tmp: Path, n: int) -> None:
    grid = "+n=" + ",".join(map(str, range(n)))
    wall, jobs = app(tmp / "a_pool", "hydra.launcher.n_workers=1", "action=check", grid)
    basic_wall, basic = app(tmp / "a_basic", "hydra/launcher=basic", "action=check", grid)
    per_job = overhead(jobs)
    print(
        f"(a) {n} tiny jobs, 1 worker: {per_job:.3f} s overhead per job (target <= {TARGET_OVERHEAD_S})"
        f"  {verdict(per_job <= TARGET_OVERHEAD_S)}"
    )
    print(f"    median gap between two jobs: {median_gap(jobs):.3f} s")
    print(f"    fixed (start-up, worker imports, exit): {wall - loop_wall(jobs):.1f} s of {wall:.1f} s")
    print(f"    basic launcher, same jobs: {overhead(basic):.3f} s per job; {basic_wall:.1f} s in all")


def part_b(tmp: Path, work_s: float) -> None:
    iterations = calibrate(work_s)
    args = ["hydra.launcher.threads_per_worker=1", "action=work", f"iterations={iterations}", "+n=1,2,3,4"]
    _, one = app(tmp / "b_1", "hydra.launcher.n_workers=1", *args)
    _, two = app(tmp / "b_2", "hydra.launcher.n_workers=2", *args)
    speedup = loop_wall(one) / loop_wall(two)
    print(
        f"(b) 4 jobs x {work_s:g} s of work ({iterations} iterations): n_workers=1 {loop_wall(one):.1f} s, "
        f"n_workers=2 {loop_wall(two):.1f} s: speedup {speedup:.2f}x (target >= {TARGET_SPEEDUP})"
        f"  {verdict(speedup >= TARGET_SPEEDUP)}"
    )


def part_c(tmp: Path, trials: int) -> None:
    hyrax_run = str(Path(sys.executable).parent / "hyrax-run")
    search = [
        hyrax_run,
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=2",
        "optimizer.lr=tag(log,interval(1e-4,1e-1))",
        "train.epochs=1",
        "data_set.n_samples=64",
        "train.progress=false",
    ]
    pool = run([*search, "hydra/launcher=pool", "hydra.launcher.n_workers=2"], tmp / "c_pool")
    local = run([*search, "hydra/launcher=local"], tmp / "c_local")
    ratio = pool / local
    print(
        f"(c) {trials} Optuna trials, n_jobs=2: pool {pool:.1f} s, local (submitit) {local:.1f} s: "
        f"ratio {ratio:.2f}x (target <= {TARGET_RATIO})  {verdict(ratio <= TARGET_RATIO)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--work-s", type=float, default=2.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--skip-c", action="store_true", help="leave out the Optuna search (c)")
    options = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="hyrax-pool-bench-") as tmp:
        part_a(Path(tmp), options.jobs)
        part_b(Path(tmp), options.work_s)
        if not options.skip_c:
            part_c(Path(tmp), options.trials)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
