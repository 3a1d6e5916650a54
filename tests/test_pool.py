"""`hydra/launcher=pool` (hyrax/pool.py, hyrax/isolation.py, hyrax/devices.py) and the GPU lending of
`hydra/launcher=local` (hyrax/cluster.py).

The end-to-end tests run real multiruns: `tests/poolapp/app.py`, a plain Hydra app whose jobs write
what they saw (`seen.json`: pid, devices, process state, RNG draws, start and end), optionally with
its recording sweeper (JobReturn statuses, `launch` from several threads at once, `interrupt` on
Ctrl-C); and the real `hyrax-run` with its MLflow store.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hyraxtest import (
    HYRAX_RUN,
    TESTS,
    hyrax_env,
    log_text,
    mlflow_runs,
    parent_and_children,
    run_hyrax,
    started,
    wait_until,
)

from hyrax import registry, tags
from hyrax.devices import DevicePool, declared_gpus, split_devices
from hyrax.errors import HyraxError
from hyrax.isolation import isolated

APP = TESTS / "poolapp" / "app.py"
RECORDING = ["hydra/sweeper=recording"]
SEED = 7  # what the app's `leak` job seeds its RNGs with


def run_app(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """`python tests/poolapp/app.py -m ARGS` in `cwd`, to its end."""
    return run_hyrax([str(APP), "-m", *args], cwd, hyrax_env(env), timeout, program=sys.executable)


def app_command(args: list[str]) -> list[str]:
    return [sys.executable, str(APP), "-m", *args]


def seen(cwd: Path) -> dict[int, dict]:
    """Job number -> what that job saw (jobs that died wrote nothing)."""
    return {int(p.parent.name): json.loads(p.read_text()) for p in (cwd / "multirun").glob("*/seen.json")}


def returns(cwd: Path) -> dict:
    return json.loads((cwd / "returns.json").read_text())


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _torch_seeded() -> float:
    """torch's first draw after `manual_seed(SEED)`."""
    return float(torch.rand(1, generator=torch.Generator().manual_seed(SEED)))


def alive(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def most_at_once(jobs: list[dict]) -> int:
    """The largest number of jobs running at one instant."""
    events = sorted(
        [(j["start"], 1) for j in jobs] + [(j["end"], -1) for j in jobs], key=lambda e: (e[0], e[1])
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


# ------------------------------------------------------------------ devices (in-process)


def test_declared_gpus_come_from_the_setting_then_cuda_visible_devices(monkeypatch):
    assert declared_gpus([0, 1, "GPU-abc"]) == ["0", "1", "GPU-abc"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert declared_gpus(None, needed=1) == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert declared_gpus(None, needed=1) == []


def test_split_devices_gives_disjoint_sets_or_one_error_naming_the_key():
    sets = split_devices(["0", "1", "2", "3"], 2, 2, "hydra.launcher.gpus_per_worker")
    assert sets == [("0", "1"), ("2", "3")]
    assert split_devices([], 3, 0, "k") == [(), (), ()]
    with pytest.raises(HyraxError) as err:
        split_devices(["0", "1", "2", "3"], 3, 2, "hydra.launcher.gpus_per_worker")
    assert err.value.key == "hydra.launcher.gpus_per_worker" and "hydra.launcher.gpus=" in err.value.fix


def test_device_pool_never_lends_one_gpu_to_two_jobs_at_once():
    pool = DevicePool(["0", "1", "2"])
    held: list[tuple[str, ...]] = []
    clashes: list[tuple] = []
    lock = threading.Lock()

    def job() -> None:
        for _ in range(20):
            with pool.lent(2) as devices:
                with lock:
                    if any(set(devices) & set(h) for h in held):
                        clashes.append((devices, list(held)))
                    held.append(devices)
                time.sleep(0.001)
                with lock:
                    held.remove(devices)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not clashes
    assert sorted(pool._free) == ["0", "1", "2"]
    with pytest.raises(HyraxError, match="asks for 4 GPUs"):
        pool.acquire(4)


# ------------------------------------------------------------------ isolation (in-process)


def test_isolated_puts_back_what_a_job_changed(tmp_path):
    module = tmp_path / "isolation_probe_mod.py"
    module.write_text(
        "from hyrax import registry\n"
        "class IsolationProbeNet: pass\n"
        "registry.register('model', IsolationProbeNet)\n"
    )
    sys.path.insert(0, str(tmp_path))
    app_log = logging.getLogger("isolation_probe")
    cwd, threads, level = os.getcwd(), torch.get_num_threads(), app_log.level
    handler = logging.FileHandler(tmp_path / "job.log")
    models = registry.names("model")  # other tests in this process may have registered some
    try:
        with isolated():
            importlib.import_module("isolation_probe_mod")
            registry.register("model", type("IsolationInlineNet", (), {}))
            os.environ["ISOLATION_PROBE"] = "1"
            os.chdir(tmp_path)
            torch.set_num_threads(threads + 1)
            app_log.addHandler(handler)
            app_log.setLevel(logging.DEBUG)
            sys.path.append("/isolation-probe")
            random.seed(SEED)
            np.random.seed(SEED)
            torch.manual_seed(SEED)
        assert registry.names("model") == models and "IsolationProbeNet" not in models
        assert "isolation_probe_mod" not in sys.modules  # imported again, it registers again
        assert "ISOLATION_PROBE" not in os.environ and os.getcwd() == cwd
        assert torch.get_num_threads() == threads
        assert app_log.handlers == [] and app_log.level == level
        assert handler.stream is None  # the job's handler was closed
        assert "/isolation-probe" not in sys.path
        with isolated():  # the next job starts from OS entropy, not from the seed the last one set
            draws = [random.random(), float(np.random.rand()), float(torch.rand(1))]
        seeded = [random.Random(SEED).random(), float(np.random.RandomState(SEED).rand()), _torch_seeded()]
        assert all(a != b for a, b in zip(draws, seeded, strict=True))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("isolation_probe_mod", None)
        os.chdir(cwd)


def test_the_launcher_module_is_light_to_import():
    # Hydra imports every hydra_plugins module on every run: no loky, torch or MLflow there.
    code = (
        "import sys, hydra_plugins.hyrax_plugins.hyrax_pool, hydra_plugins.hyrax_plugins.hyrax_submitit;"
        "print([m for m in ('loky', 'torch', 'mlflow', 'hyrax.pool') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------ the pool itself (real workers)


@pytest.mark.slow
def test_interrupt_stops_running_jobs_and_returns_every_waiting_caller(tmp_path):
    from hyrax.pool import JobInterrupted, PoolSettings, WorkerPool

    pool = WorkerPool(PoolSettings(n_workers=1, threads_per_worker=1), preload=())
    marker = tmp_path / "running"
    outcomes: dict[int, list] = {}

    def caller(i: int) -> None:
        job = lambda path: (Path(path).touch(), time.sleep(120))  # noqa: E731  (pickled by value)
        outcomes[i] = pool.run([(job, (str(marker),))])

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in callers:
        t.start()
    wait_until(marker.exists, 120, "a job running on the worker")
    pids = pool._slots[0].pids()
    start = time.monotonic()
    pool.interrupt(grace_s=5)
    for t in callers:
        t.join(15)
    took = time.monotonic() - start
    assert not any(t.is_alive() for t in callers) and took < 10, f"callers still waiting after {took:.1f} s"
    errors = sorted(str(outcome.error) for [outcome] in outcomes.values())
    assert all(isinstance(o.error, JobInterrupted) for [o] in outcomes.values()), errors
    # The running job got SIGINT and ended by it (within the grace); the others never started.
    assert errors == ["interrupted (Ctrl-C)"] + ["not started: the sweep was interrupted"] * 2, errors
    assert pids and not any(alive(pid) for pid in pids)


# ------------------------------------------------------------------ multiruns of the plain app


@pytest.mark.slow
def test_jobs_on_one_warm_worker_see_nothing_of_the_jobs_before(tmp_path):
    # Job 0 changes every piece of process state it can and seeds the RNGs; the jobs after it run in
    # the same process and must find a fresh process's state.
    proc = run_app(["hydra.launcher.n_workers=1", "action=leak,check,import,check"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = seen(tmp_path)
    assert sorted(jobs) == [0, 1, 2, 3]
    assert len({j["pid"] for j in jobs.values()}) == 1, "the jobs did not share one worker"
    assert {"LeakedModel", "ImportedModel"} <= set(jobs[0]["models_after"])
    seeded = [random.Random(SEED).random(), float(np.random.RandomState(SEED).rand()), _torch_seeded()]
    for later in (jobs[1], jobs[3]):
        assert later["models"] == []
        assert later["env_leak"] is None
        assert later["cwd"] == jobs[0]["cwd"] == str(tmp_path)
        assert later["threads"] == jobs[0]["threads"]
        assert later["app_logger"] == [0]  # no handler, level NOTSET
        assert later["deterministic"] is False and later["sys_path_leak"] is False
        assert all(a != b for a, b in zip(later["draws"], seeded, strict=True)), "RNG state leaked"
    assert all(a != b for a, b in zip(jobs[1]["draws"], jobs[3]["draws"], strict=True))
    # A module imported by an earlier job is run again when a later job imports it: its class registers.
    assert jobs[2]["models_after"] == ["ImportedModel"]


@pytest.mark.slow
def test_a_job_that_raises_or_kills_its_worker_fails_alone(tmp_path):
    actions = "check,raise,check,exit,check,sigkill,check"
    proc = run_app([*RECORDING, "hydra.launcher.n_workers=1", f"action={actions}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = returns(tmp_path)
    statuses = [r["status"] for r in got["returns"]]
    assert statuses == ["COMPLETED", "FAILED", "COMPLETED", "FAILED", "COMPLETED", "FAILED", "COMPLETED"]
    errors = [r["error"] for r in got["returns"]]
    assert errors[1] == "ValueError: boom from the job"
    assert errors[3].startswith("WorkerDied: the worker process running this job died (exit code EXIT(1))")
    assert errors[5].startswith("WorkerDied: the worker process running this job died (exit code SIGKILL")
    pids = {n: j["pid"] for n, j in seen(tmp_path).items()}
    assert pids[0] == pids[2], "a job that raised cost its worker"
    assert len({pids[2], pids[4], pids[6]}) == 3, "a dead worker was not replaced"


@pytest.mark.slow
def test_each_worker_gets_its_own_declared_gpus(tmp_path):
    proc = run_app(
        [
            "hydra.launcher.gpus=[0,1,2,3]",
            "hydra.launcher.n_workers=2",
            "hydra.launcher.gpus_per_worker=2",
            "hydra.launcher.threads_per_worker=1",
            "action=sleep",
            "seconds=1",
            "+n=1,2,3,4",
        ],
        tmp_path,
        env={"CUDA_VISIBLE_DEVICES": "7"},  # the setting wins over the sweep process's own
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = seen(tmp_path).values()
    by_worker: dict[int, set[str]] = {}
    for job in jobs:
        by_worker.setdefault(job["pid"], set()).add(job["cuda_visible"])
        assert job["omp"] == "1" and job["threads"] == 1
    assert len(by_worker) == 2, by_worker
    sets = [set(next(iter(s)).split(",")) for s in by_worker.values()]
    assert all(len(s) == 1 for s in by_worker.values()), "a worker's devices changed between jobs"
    assert sets[0].isdisjoint(sets[1]) and sets[0] | sets[1] == {"0", "1", "2", "3"}, sets


@pytest.mark.slow
def test_more_gpus_than_declared_is_one_error(tmp_path):
    proc = run_app(
        ["hydra.launcher.gpus=[0,1]", "hydra.launcher.n_workers=2", "hydra.launcher.gpus_per_worker=2"],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "hydra.launcher.gpus_per_worker" in proc.stderr and "only 2 are declared" in proc.stderr


@pytest.mark.slow
def test_launch_from_several_threads_shares_the_workers(tmp_path):
    # As the Optuna sweeper calls it: one job per call, 3 calls at a time, 2 workers.
    args = [
        *RECORDING,
        "hydra.sweeper.threads=3",
        "hydra.launcher.n_workers=2",
        "action=sleep",
        "seconds=1.5",
    ]
    proc = run_app([*args, "+n=1,2,3,4,5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = returns(tmp_path)
    assert got["parallel_jobs"] == 2
    assert [r["status"] for r in got["returns"]] == ["COMPLETED"] * 5
    jobs = list(seen(tmp_path).values())
    assert len({j["pid"] for j in jobs}) == 2
    assert most_at_once(jobs) == 2, "jobs did not run side by side on the two workers, or more than two ran"


@pytest.mark.slow
def test_ctrl_c_with_launches_from_several_threads_returns_them_all(tmp_path):
    # Three launch calls, one worker: one job runs, two calls wait for the worker. Ctrl-C: the
    # sweeper calls interrupt(); every call returns, the workers are gone, the command ends.
    args = [
        *RECORDING,
        "hydra.sweeper.threads=3",
        "hydra.launcher.n_workers=1",
        "action=sleep",
        "seconds=300",
    ]
    log = tmp_path / "sweep.log"
    with started(app_command([*args, "+n=1,2,3"]), tmp_path, log) as proc:
        wait_until(lambda: list(tmp_path.glob("multirun/*/started")), 240, "a job sleeping", log, proc)
        interrupted = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - interrupted
        wait_until(lambda: not session_members(proc.pid), 10, "the session's processes gone", log)
    assert proc.returncode != 0 and took < 30, f"exit {proc.returncode} after {took:.1f} s"
    got = returns(tmp_path)
    assert got["all_returned"] and got["interrupted_after_s"] < 15, got
    assert len(list(tmp_path.glob("multirun/*/started"))) == 1


@pytest.mark.slow
def test_local_launcher_lends_each_running_job_its_own_gpus(tmp_path):
    # Three launch calls at a time, two visible GPUs, one per job: a third job waits for a free GPU.
    args = [
        *RECORDING,
        "hydra.sweeper.threads=3",
        "hydra/launcher=submitit_local",
        "hydra.launcher._target_=hydra_plugins.hyrax_plugins.hyrax_submitit.HyraxLocalLauncher",
        "hydra.launcher.gpus_per_node=1",
        "action=sleep",
        "seconds=2",
        "+n=1,2,3,4",
    ]
    proc = run_app(args, tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"}, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = returns(tmp_path)
    assert got["parallel_jobs"] is None
    assert [r["status"] for r in got["returns"]] == ["COMPLETED"] * 4
    jobs = list(seen(tmp_path).values())
    assert len(jobs) == 4 and all(j["cuda_visible"] in ("0", "1") for j in jobs), jobs
    for i, a in enumerate(jobs):
        for b in jobs[i + 1 :]:
            assert not (overlapping(a, b) and a["cuda_visible"] == b["cuda_visible"]), (a, b)


# ------------------------------------------------------------------ the real hyrax-run

TINY = ["train.epochs=1", "data_set.n_samples=64"]


@pytest.mark.slow
def test_hyrax_run_multirun_on_the_pool(tmp_path):
    proc = run_hyrax(
        ["-m", "hydra/launcher=pool", "hydra.launcher.n_workers=2", "optimizer.lr=1e-3,1e-2", *TINY], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.001", "0.01"]


@pytest.mark.slow
def test_hyrax_run_failed_and_dead_jobs_fail_the_sweep_after_the_others_ran(tmp_path):
    # As with Hydra's basic launcher, every job runs, then the first failed job fails the command
    # (exit 1, its error); the dead job's run is closed FAILED, the healthy job's is FINISHED.
    models = "slurmpkg.SelfKillNet,userpkg.models.CrashNet,userpkg.models.PlainNet"
    proc = run_hyrax(
        [
            "-m",
            "hydra/launcher=pool",
            "hydra.launcher.n_workers=1",
            f"model={models}",
            "data_set=userpkg.data.ImageLabelData",
            "train.epochs=1",
        ],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "WorkerDied: the worker process running this job died (exit code SIGKILL" in proc.stderr
    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    status = {c.data.tags[tags.MODEL].rsplit(".", 1)[-1]: c.info.status for c in children}
    assert status == {"SelfKillNet": "FAILED", "CrashNet": "FAILED", "PlainNet": "FINISHED"}, status
    assert parent.info.status == "FAILED"


def _child_runs_running(cwd: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(cwd / "mlflow.db") as db:
            return db.execute(
                "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'mlflow.parentRunId' and r.status = 'RUNNING'"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_ctrl_c_ends_the_runs_killed_and_leaves_no_worker(tmp_path):
    args = [
        "-m",
        "hydra/launcher=pool",
        "hydra.launcher.n_workers=2",
        "optimizer.lr=1e-3,1e-2",
        "model=userpkg.models.PlainNet",
        "data_set=userpkg.data.ImageLabelData",
        "data_set.delay=0.01",
        "train.epochs=100",
    ]
    log = tmp_path / "sweep.log"
    with started([HYRAX_RUN, *args], tmp_path, log) as proc:
        wait_until(lambda: _child_runs_running(tmp_path) == 2, 240, "two child runs RUNNING", log, proc)
        time.sleep(2)  # into the epochs
        interrupted = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - interrupted
        wait_until(lambda: not session_members(proc.pid), 10, "the workers gone", log)
    assert proc.returncode == 130 and took < 20, f"exit {proc.returncode} after {took:.1f} s\n{log_text(log)}"
    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]
    assert parent.info.status == "KILLED"  # closed by the sweep process on its way out, as a Ctrl-C
