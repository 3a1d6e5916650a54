"""The same Optuna search through Ray Tune and through `hyrax-run -m`: wall time of each, and the ratio.

Run (Ray is not a Hyrax dependency: use a venv that has both, see benchmarks/README.md):

    /tmp/rayvenv/bin/python benchmarks/ray_tune.py [--trials 20] [--concurrency 2] [--launcher pool]

Both contenders run `--trials` trials of the same tiny training (default model and data set,
`train.epochs=1 data_set.n_samples=64`, MLflow on, one SQLite store per contender created before
the clock starts), searching `optimizer.lr` log-uniform in [1e-4, 1e-1] with Optuna's TPE sampler
(seed 0), `--concurrency` trials at a time, CPU only, in a fresh temp dir:

- Ray Tune: `tune.Tuner` with `ray.tune.search.optuna.OptunaSearch`, `max_concurrent_trials`,
  1 CPU per trial (Ray sets OMP_NUM_THREADS=1 in its workers); each trial trains through the
  Python API (`hyrax.Hyrax(...).train()`) and reports `h.objective`.
- Hyrax: `hyrax-run -m hydra/sweeper=optuna hydra.sweeper.n_trials=N hydra.sweeper.n_jobs=C
  hydra/launcher=pool hydra.launcher.n_workers=C ...` (each pool worker runs 1 thread on 2 cores
  with 2 workers). `--launcher local` (submitit, a new process per job) is used instead when the
  pool launcher does not exist in this checkout (`--launcher auto`, the default, says which it took).

Each wall time is that of a whole child process (interpreter start-up, imports, Ray's start and
stop / Hydra's composition and the pool's start, all trials, results), measured by this script.
Ratio > 1 means Hyrax's sweep is faster. The numbers are noisy on a busy machine: the script prints
the load average. Without an importable `ray` the script prints why and exits 0; it exits 1 if a
contender fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import print_load, timed

TRAINING = ["train.epochs=1", "data_set.n_samples=64", "train.progress=false"]
LR_LOW, LR_HIGH = 1e-4, 1e-1
SEED = 0


def ray_missing() -> str | None:
    """Why Ray Tune with Optuna cannot be used here, or None if it can."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except Exception as err:  # ImportError, or a broken install
        return f"{type(err).__name__}: {err}"
    return None


def make_store(uri: str) -> None:
    """Create the MLflow SQLite store before timing (two first trials must not race to create it)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=uri).search_experiments()


# ---------------------------------------------------------------- Ray Tune (child process)


def ray_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: train through Hyrax's Python API, report the objective."""
    from ray import tune

    from hyrax import Hyrax

    h = Hyrax(
        overrides=[
            *TRAINING,
            f"optimizer.lr={config['lr']!r}",
            f"mlflow.tracking_uri={config['tracking_uri']}",
        ]
    )
    h.train()
    tune.report({"objective": float(h.objective)})


def ray_child(workdir: Path, trials: int, concurrency: int) -> None:
    """Runs in its own process: the whole Ray Tune search; prints one JSON line with its results."""
    start = time.perf_counter()
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    ray.init(
        num_cpus=concurrency,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(workdir / "ray_tmp"),
    )
    try:
        tuner = tune.Tuner(
            tune.with_resources(ray_trial, {"cpu": 1}),
            param_space={"lr": tune.loguniform(LR_LOW, LR_HIGH), "tracking_uri": uri},
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric="objective", mode="min", seed=SEED),
                num_samples=trials,
                max_concurrent_trials=concurrency,
            ),
            run_config=tune.RunConfig(
                name="hyrax_bench", storage_path=str(workdir / "ray_results"), verbose=0
            ),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    wall = time.perf_counter() - start
    finished = [r for r in results if r.error is None and "objective" in (r.metrics or {})]
    best = min((r.metrics["objective"] for r in finished), default=None)
    print(
        json.dumps(
            {"wall_in_process": wall, "completed": len(finished), "errors": results.num_errors, "best": best}
        )
    )


# ---------------------------------------------------------------- contenders


def run_ray(workdir: Path, trials: int, concurrency: int) -> tuple[float, dict[str, Any]]:
    workdir.mkdir(parents=True)
    make_store(f"sqlite:///{workdir / 'mlflow.db'}")
    cmd = [
        sys.executable,
        __file__,
        "--_ray-child",
        str(workdir),
        "--trials",
        str(trials),
        "--concurrency",
        str(concurrency),
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"Ray Tune run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, json.loads(lines[-1])


def hyrax_run() -> str:
    exe = Path(sys.executable).parent / "hyrax-run"
    if not exe.is_file():
        sys.exit(
            f"hyrax-run not found next to {sys.executable}: "
            "install the project in this venv (pip install -e .)"
        )
    return str(exe)


def pick_launcher(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    from hyrax.config import builtin_dir

    return "pool" if (builtin_dir("conf") / "hydra" / "launcher" / "pool.yaml").is_file() else "local"


def run_hyrax(workdir: Path, trials: int, concurrency: int, launcher: str) -> tuple[float, dict[str, Any]]:
    workdir.mkdir(parents=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    make_store(uri)
    sweep_dir = workdir / "sweep"
    launcher_args = [f"hydra/launcher={launcher}"]
    if launcher == "pool":
        launcher_args.append(f"hydra.launcher.n_workers={concurrency}")
    cmd = [
        hyrax_run(),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=tpe",
        f"hydra.sweeper.sampler.seed={SEED}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.n_jobs={concurrency}",
        "hydra.sweeper.study_name=bench",
        *launcher_args,
        f"hydra.sweep.dir={sweep_dir}",
        f"optimizer.lr=tag(log,interval({LR_LOW},{LR_HIGH}))",
        f"mlflow.tracking_uri={uri}",
        *TRAINING,
    ]
    wall = timed(cmd, workdir)
    info: dict[str, Any] = {}
    results = sweep_dir / "optimization_results.yaml"
    if results.is_file():
        from omegaconf import OmegaConf

        res = OmegaConf.to_container(OmegaConf.load(results))
        info["best"] = res.get("best_value")
    try:
        import optuna

        from hyrax.search.storage import open_storage

        study = optuna.load_study(study_name="bench", storage=open_storage(str(sweep_dir / "optuna.journal")))
        info["completed"] = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
    except Exception as err:  # the count is informative only
        info["completed"] = f"? ({type(err).__name__})"
    return wall, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time in both")
    parser.add_argument(
        "--launcher", choices=("auto", "pool", "local"), default="auto", help="Hyrax's launcher"
    )
    parser.add_argument("--_ray-child", dest="ray_child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.ray_child:
        ray_child(Path(args.ray_child), args.trials, args.concurrency)
        return
    why = ray_missing()
    if why is not None:
        print(
            f"Ray Tune is not importable with {sys.executable} ({why}); nothing to compare. "
            "Install it in a separate venv: see benchmarks/README.md."
        )
        sys.exit(0)

    import ray

    launcher = pick_launcher(args.launcher)
    n, c = args.trials, args.concurrency
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hyrax-ray-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ray_wall, ray_info = run_ray(tmp / "ray", n, c)
        hyrax_wall, hyrax_info = run_hyrax(tmp / "hyrax", n, c, launcher)
    load_after = os.getloadavg()[0]

    print(
        f"{n} Optuna (TPE) trials of default model/data set, {' '.join(TRAINING[:2])}, optimizer.lr "
        f"log-uniform [{LR_LOW}, {LR_HIGH}], {c} at a time, CPU, MLflow on (SQLite)"
    )
    print(
        f"  Ray Tune {ray.__version__} (Tuner + OptunaSearch)   {ray_wall:8.2f} s   "
        f"completed {ray_info['completed']}/{n}, best {ray_info['best']}"
    )
    note = "" if args.launcher != "auto" or launcher == "pool" else "  (pool launcher not found: local used)"
    print(
        f"  hyrax-run -m, hydra/launcher={launcher:<6}        {hyrax_wall:8.2f} s   "
        f"completed {hyrax_info.get('completed')}/{n}, best {hyrax_info.get('best')}{note}"
    )
    print(f"  ratio Ray / Hyrax                       {ray_wall / hyrax_wall:8.2f}x   (> 1: Hyrax is faster)")
    print_load(load_before, load_after)


if __name__ == "__main__":
    main()
