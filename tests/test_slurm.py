"""The same `hyrax-run -m` commands on a real Slurm cluster (`hydra/launcher=slurm`), and shared studies.

The cluster is the single-node one of `.ci/local-slurm.sh` (2 CPUs here, accounting on). The
module fixture uses it when it is up; with CI set it starts it (a failure to start is then an
error); otherwise the Slurm tests skip and say how to start it. The two-worker study tests need no
Slurm and always run. Every run happens in a fresh directory with MLFLOW_TRACKING_URI removed, so
its store is `<tmp>/mlflow.db`; the shared filesystem of a real cluster is the local disk here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import optuna
import pytest
import torch
from hyraxtest import (
    HYRAX_RUN,
    TESTS,
    hyrax_env,
    log_text,
    metric_history,
    mlflow_runs,
    parent_and_children,
    run_hyrax,
    started,
    wait_until,
)

# A Slurm cluster, sweeps of several hyrax-run jobs, or several sweeps at once: all slow.
pytestmark = pytest.mark.slow

ROOT = TESTS.parent
CLUSTER = ROOT / ".ci" / "local-slurm.sh"
SLURM = ["hydra/launcher=slurm"]
# Two jobs side by side on the 2-CPU test node (the preset asks 2 CPUs and 8 GB per job).
SMALL = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
SLOW = ["model=userpkg.models.PlainNet", "data_set=userpkg.data.ImageLabelData", "data_set.delay=0.003"]


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _cluster(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The environment that reaches the cluster (SLURM_CONF); skips with the reason when there is none."""
    if _cluster("status", 60).returncode != 0:
        if not _ci():
            why = (
                "Slurm is not installed"
                if shutil.which("sbatch") is None
                else "no local Slurm cluster is running"
            )
            how = (
                "start one with `bash .ci/local-slurm.sh start` (as root; installs the Debian packages "
                "if missing), or run with CI=true to let the tests start it"
            )
            if os.geteuid() != 0:
                how = "starting one needs root: `sudo bash .ci/local-slurm.sh start`"
            pytest.skip(f"Slurm tests need a cluster: {why}; {how}")
        started = _cluster("start", 900)
        if started.returncode != 0:
            pytest.fail(
                f"CI=true but `bash .ci/local-slurm.sh start` failed (exit {started.returncode}):\n"
                f"{started.stdout}\n{started.stderr}",
                pytrace=False,
            )
    lines = _cluster("env", 30).stdout.split()
    env = dict(item.split("=", 1) for item in lines if "=" in item)
    assert "SLURM_CONF" in env, lines
    return {"SLURM_CONF": env["SLURM_CONF"]}


DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "mariadbd")


def test_the_cluster_listens_on_127_0_0_1_only(slurm: dict[str, str]) -> None:
    """Every TCP port the local cluster's daemons listen on is bound to 127.0.0.1 (read from /proc)."""
    listening = _listening_sockets()
    seen: dict[str, set[str]] = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if name in DAEMONS:
            for inode, address in listening.items():
                if f"socket:[{inode}]" in inodes:
                    seen.setdefault(name, set()).add(address)
    assert {"slurmctld", "slurmd"} <= set(seen), seen
    assert all(a.startswith("127.0.0.1:") for addresses in seen.values() for a in addresses), seen


def _listening_sockets() -> dict[str, str]:
    """inode -> "a.b.c.d:port" of the IPv4 TCP sockets in LISTEN state (/proc/net/tcp), and IPv6 ones
    as "[v6]:port" (never loopback-only here)."""
    found: dict[str, str] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            ip = "[v6]" if v6 else ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
            found[fields[9]] = f"{ip}:{int(port, 16)}"
    return found


@pytest.fixture
def run_env(slurm: dict[str, str]) -> dict[str, str]:
    """`hyrax_env` plus the cluster, without Slurm/sbatch settings of the shell (or job) pytest runs in."""
    env = {
        k: v
        for k, v in hyrax_env().items()
        if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "HYRAX_SLURM_"))
    }
    env.update(slurm)
    return env


@pytest.fixture(autouse=True)
def _cancel_leftover_jobs(request, tmp_path: Path):
    """Cancel whatever Slurm jobs a test submitted (found in its .submitit folders) once it ends."""
    yield
    if "slurm" in request.fixturenames:
        ids = job_ids(tmp_path)
        if ids:
            subprocess.run(
                ["scancel", *ids],
                capture_output=True,
                timeout=30,
                env={**os.environ, **request.getfixturevalue("slurm")},
            )


def job_ids(root: Path) -> list[str]:
    """The Slurm job ids (array tasks `123_0` and arrays `123`) submitit recorded under `root`."""
    return sorted(
        {
            p.name
            for d in root.rglob(".submitit")
            for p in d.iterdir()
            if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name)
        }
    )


def task_ids(root: Path) -> list[str]:
    """The ids of the Slurm jobs that ran a Hydra job (`123_0` for an array task, `123` alone), in order."""
    return sorted(
        (p.parent.name for p in root.rglob(".submitit/*/*_submitted.pkl")),
        key=lambda j: [int(n) for n in j.split("_")],
    )


UNSETTLED = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


def sacct_states(ids: list[str], env: dict[str, str], wait: float = 30) -> dict[str, str]:
    """Slurm's final accounting state of each job (allocations only, no steps).

    Submitit hands the sweep a job's result as soon as the job has written it, a moment before the
    job process exits, so accounting may still say RUNNING; wait up to `wait` seconds for it to settle.
    """
    deadline = time.monotonic() + wait
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=True,
        ).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if line)
        if not UNSETTLED & set(states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def ok(proc: subprocess.CompletedProcess, root: Path) -> subprocess.CompletedProcess:
    """Assert a sweep succeeded; else show its output and its Slurm jobs' logs."""
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}\nJOB LOGS:\n{job_logs(root)}"
    )
    return proc


def job_logs(root: Path, tail: int = 4000) -> str:
    """The end of every job's stdout/stderr (submitit's logs) and Hydra job log under `root`."""
    files = sorted([*root.rglob(".submitit/*/*_log.*"), *root.rglob("multiruns/*/*/*.log")])
    return "\n".join(f"== {f.relative_to(root)}\n{f.read_text(errors='replace')[-tail:]}" for f in files)


def study_of(storage: str, name: str | None = None) -> optuna.Study:
    """A study read from a journal file path or an RDB URL (the only study in it when no name)."""
    from hyrax.search.storage import open_storage

    opened = open_storage(storage)
    if name is None:
        [summary] = optuna.get_all_study_summaries(opened)
        name = summary.study_name
    return optuna.load_study(study_name=name, storage=opened)


def last_epoch(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return -1
    return int(torch.load(last, map_location="cpu", weights_only=False)["loop"]["epoch"])


def test_grid_on_slurm_is_one_parent_with_a_child_per_job(slurm, run_env, tmp_path):
    # The command: the local sweep plus hydra/launcher=slurm, nothing else. With the preset's
    # 2 CPUs per job the two jobs take turns on the 2-CPU test node.
    proc = ok(
        run_hyrax(["-m", *SLURM, "optimizer.lr=0.001,0.01", "train.epochs=2"], tmp_path, run_env, 150),
        tmp_path,
    )
    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hyrax.launcher"].endswith("SlurmLauncher")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["hyrax.overrides"] for c in children) == [
        "optimizer.lr=0.001 train.epochs=2",
        "optimizer.lr=0.01 train.epochs=2",
    ]
    # They really were Slurm jobs: an array of two tasks, COMPLETED in Slurm's accounting, each of
    # which ran its job in its own run directory of the sweep.
    tasks = task_ids(tmp_path)
    assert len(tasks) == 2, job_ids(tmp_path)
    states = sacct_states(tasks, run_env)
    assert set(states.values()) == {"COMPLETED"}, states
    sweep_dir = Path(parent.data.tags["hyrax.sweep_dir"])
    assert {Path(c.data.tags["hyrax.run_dir"]) for c in children} == {sweep_dir / "0", sweep_dir / "1"}
    for task in tasks:
        [out] = sweep_dir.glob(f".submitit/{task}/{task}_0_log.out")
        assert f"JobEnvironment(job_id={task}," in out.read_text()
    assert "Submitit 'slurm' sweep output dir" in proc.stderr + proc.stdout


def test_two_slurm_tasks_train_one_job_data_parallel(slurm, run_env, tmp_path):
    # hydra.launcher.tasks_per_node=2: one Slurm job of two tasks, each a rank (gloo on the CPU),
    # meeting on the job's node; rank 0 alone tracks, so the sweep has one child run.
    out = tmp_path / "notes"
    out.mkdir()
    env = {**run_env, "HYRAX_TEST_OUT": str(out)}
    ok(
        run_hyrax(
            [
                "-m",
                *SLURM,
                *SMALL,
                "hydra.launcher.tasks_per_node=2",
                "model=ddppkg.WeightNet",
                "data_set.n_samples=800",
                "train.epochs=2",
                "optimizer.lr=0.01",
                "mlflow.system_metrics=false",
            ],
            tmp_path,
            env,
            240,
        ),
        tmp_path,
    )
    [parent], [child] = parent_and_children(mlflow_runs(tmp_path))
    assert child.info.status == "FINISHED" and child.data.tags["hyrax.ranks"] == "2"
    assert parent.info.status == "FINISHED"
    rank0, rank1 = ((out / f"weights_rank{r}.txt").read_text().split() for r in (0, 1))
    assert rank0 and rank0 == rank1  # the same weights at every evaluation on both ranks
    [task] = task_ids(tmp_path)
    assert sacct_states([task], run_env) == {task: "COMPLETED"}
    [log0] = tmp_path.rglob(f".submitit/{task}/{task}_0_log.out")
    assert (log0.parent / f"{task}_1_log.out").is_file()  # submitit ran two tasks


def test_gpu_request_and_setup_lines_reach_the_job(slurm, run_env, tmp_path):
    # The test node declares one GPU as a GRES over a stand-in device: a job asking for it gets
    # CUDA_VISIBLE_DEVICES from Slurm, and the preset's setup lines run before the job.
    ok(
        run_hyrax(
            [
                "-m",
                *SLURM,
                *SMALL,
                "hydra.launcher.gpus_per_node=1",
                'hydra.launcher.setup=["echo SETUP_SAW_GPUS=$CUDA_VISIBLE_DEVICES"]',
                "train.epochs=1",
            ],
            tmp_path,
            run_env,
            150,
        ),
        tmp_path,
    )
    [task] = task_ids(tmp_path)
    [out] = tmp_path.rglob(f".submitit/{task}/{task}_0_log.out")
    assert "SETUP_SAW_GPUS=0" in out.read_text()


def test_optuna_trials_on_slurm_prune_each_other_through_the_journal(slurm, run_env, tmp_path):
    # Trials 0 and 1 learn (lr 0.01, 0.02); trials 2 and 3 barely move (lr 1e-7, 2e-7). Trial 2 and 3
    # run as other Slurm jobs than 0 and 1: the median pruner sees 0 and 1's curves only through the
    # study's journal file in the sweep dir, and stops 2 and 3 after their first epoch.
    sweep_dir = tmp_path / "multiruns" / "prune"
    proc = ok(
        run_hyrax(
            [
                "-m",
                *SLURM,
                *SMALL,
                "hydra/sweeper=optuna",
                "hydra/sweeper/pruner=median",
                "hydra.sweeper.pruner.n_startup_trials=2",
                "hydra.sweeper.n_trials=4",
                "hydra.sweeper.n_jobs=2",
                "hydra.sweeper.enqueue_trials=[{optimizer.lr:0.01},{optimizer.lr:0.02},"
                "{optimizer.lr:1e-7},{optimizer.lr:2e-7}]",
                "optimizer.lr=tag(log, interval(1e-8, 1e-1))",
                "optimizer=sgd",
                "train.epochs=3",
                f"hydra.sweep.dir={sweep_dir}",
            ],
            tmp_path,
            run_env,
            200,
        ),
        tmp_path,
    )
    trials = study_of(str(sweep_dir / "optuna.journal")).get_trials()
    states = {t.number: t.state.name for t in trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "PRUNED"}, (states, proc.stderr[-3000:])
    assert all(len(t.intermediate_values) == 1 for t in trials if t.state.name == "PRUNED")
    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert parent.info.status == "FINISHED"
    tagged = {
        int(c.data.tags["hyrax.trial_number"]): (c.data.tags["hyrax.optuna_state"], c.info.status)
        for c in children
    }
    assert tagged == {
        0: ("COMPLETE", "FINISHED"),
        1: ("COMPLETE", "FINISHED"),
        2: ("PRUNED", "KILLED"),
        3: ("PRUNED", "KILLED"),
    }
    tasks = task_ids(tmp_path)
    assert len(tasks) == 4 and set(sacct_states(tasks, run_env).values()) == {"COMPLETED"}


def logs_of(sweep_dir: Path, num: int, task: str) -> str:
    """All that job `num` of a sweep (Slurm job `task`) logged: submitit's output and Hydra's job log."""
    files = sorted([*sweep_dir.glob(f".submitit/{task}/*_log.*"), *(sweep_dir / str(num)).glob("*.log")])
    return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')}" for f in files)


def test_requeued_jobs_resume_from_their_last_checkpoint(slurm, run_env, tmp_path):
    # Two slow 12-epoch jobs; after their second epoch each is interrupted as a cluster does it:
    # - job 0 by `scontrol requeue` (what preemption or an admin does): Slurm kills it and queues it
    #   again with the same id and SLURM_RESTART_COUNT=1;
    # - job 1 by SIGUSR2, which Slurm sends hydra.launcher.signal_delay_s before a time limit (or on
    #   preemption): submitit, inside the job, requeues it itself and exits. We send the signal, as
    #   submitit's own tests do; a real time limit is not tested: timeout_min=1 is the shortest, and a
    #   job that outlives it (Slurm's signal may come up to 60 s early) costs well over 90 s here.
    # Slurm holds a requeued job ~12 s (cred_expire=10 in .ci/local-slurm.sh) before it starts again.
    # The sweep waits through all of it; each job continues its own run dir and MLflow run.
    sweep_dir = tmp_path / "multiruns" / "requeue"
    args = [
        HYRAX_RUN,
        "-m",
        *SLURM,
        *SMALL,
        *SLOW,
        "train.epochs=12",
        "train.seed=1,2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    pending = {0: ["scontrol", "requeue"], 1: ["scancel", "--signal=USR2"]}

    def interrupt_those_past_epoch_2() -> bool:
        """Interrupt each job that has reached epoch 2 (once); true when every job has been."""
        for num in list(pending):
            at = last_epoch(sweep_dir / str(num))
            if at >= 2:
                assert at < 12, f"job {num} had finished (epoch {at}) before it could be interrupted"
                subprocess.run(
                    [*pending.pop(num), task_ids(tmp_path)[num]], env=run_env, check=True, timeout=30
                )
        return not pending

    log = tmp_path / "sweep.log"
    with started(args, tmp_path, log, run_env) as proc:
        wait_until(
            interrupt_those_past_epoch_2,
            90,
            "every job reaching epoch 2",
            lambda: log_text(log) + job_logs(tmp_path),
            proc,
        )
        proc.wait(timeout=120)
    assert proc.returncode == 0, log_text(log) + job_logs(tmp_path)

    [parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert parent.info.status == "FINISHED"
    assert len(children) == 2, [c.data.tags["hyrax.run_dir"] for c in children]
    tasks = task_ids(tmp_path)
    for num, task in enumerate(tasks):
        run_dir = sweep_dir / str(num)
        logs = logs_of(sweep_dir, num, task)
        assert last_epoch(run_dir) == 12, logs
        # Slurm ran the same job (same id) twice; the second time resumed from the first one's last.pt.
        assert logs.count(f"Starting with JobEnvironment(job_id={task},") == 2, logs
        assert f"resuming from {run_dir / 'checkpoints' / 'last.pt'}" in logs, logs
        # ... and continued the job's one MLflow run, which ends FINISHED with every epoch in it.
        [child] = [c for c in children if c.data.tags["hyrax.run_dir"] == str(run_dir)]
        assert child.info.status == "FINISHED", logs
        assert len(metric_history(tmp_path, child.info.run_id, "train/loss")) >= 12
    usr2 = logs_of(sweep_dir, 1, tasks[1])
    assert "Caught signal SIGUSR2" in usr2 and f"Requeued job {tasks[1]}" in usr2, usr2


def test_a_job_killed_by_a_signal_ends_the_sweep_instead_of_hanging_it(slurm, run_env, tmp_path):
    # Job 0 SIGKILLs itself (as the OOM killer would): no Python error, no result file. Submitit learns
    # from Slurm's accounting that the job is over, and the sweep fails instead of waiting forever.
    start = time.time()
    proc = run_hyrax(
        [
            "-m",
            *SLURM,
            *SMALL,
            "model=slurmpkg.SelfKillNet,userpkg.models.PlainNet",
            "data_set=userpkg.data.ImageLabelData",
            "train.epochs=1",
        ],
        tmp_path,
        run_env,
        150,
    )
    took = time.time() - start
    assert proc.returncode != 0, proc.stderr
    assert took < 120, f"the sweep took {took:.0f} s to notice its dead job"
    tasks = task_ids(tmp_path)
    states = sacct_states(tasks, run_env)
    assert states[tasks[0]] == "FAILED", states
    [parent], _ = parent_and_children(mlflow_runs(tmp_path))
    assert parent.info.status == "FAILED"


def test_a_dead_job_fails_only_its_own_optuna_trial(slurm, run_env, tmp_path):
    # Two trials in one batch, the first of which dies without a result: only it is told FAIL; the
    # other, healthy job of the same batch completes and is told COMPLETE.
    proc = run_hyrax(
        [
            "-m",
            *SLURM,
            *SMALL,
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.max_failure_rate=0.5",
            "model=choice(slurmpkg.SelfKillNet, userpkg.models.PlainNet)",
            "hydra.sweeper.enqueue_trials=[{model: slurmpkg.SelfKillNet}, {model: userpkg.models.PlainNet}]",
            "data_set=userpkg.data.ImageLabelData",
            "train.epochs=1",
        ],
        tmp_path,
        run_env,
        200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [journal] = tmp_path.rglob("optuna.journal")
    states = {t.params["model"]: t.state.name for t in study_of(str(journal)).get_trials()}
    assert states == {"slurmpkg.SelfKillNet": "FAIL", "userpkg.models.PlainNet": "COMPLETE"}, states
    [_parent], children = parent_and_children(mlflow_runs(tmp_path))
    assert sorted(c.data.tags["hyrax.optuna_state"] for c in children) == ["COMPLETE", "FAIL"]
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]


# Several sweep processes on one study: what `sbatch --array=0-3` of the same `hyrax-run -m` does on a
# cluster (README "Running on a Slurm cluster"). Here the workers run side by side with Hydra's basic
# launcher: no Slurm needed. Each worker has its own sweep dir (its own MLflow parent run and job
# folders); study_name and storage name the study they share. Both start at the same moment, as array
# tasks do, on an MLflow store that exists already (a fresh one is the next test's subject). One run of
# the workers per storage kind, checked by two tests: the study, and the MLflow runs.
WORKERS = 2
N_TRIALS = 6
N_JOBS = 2


def run_together(where: Path, arguments: list[list[str]], timeout: float) -> str:
    """Start one `hyrax-run` per argument list at the same moment; assert all succeed; their logs."""
    logs = [where / f"worker_{w}.log" for w in range(len(arguments))]
    with ExitStack() as stack:
        procs = [
            stack.enter_context(started([HYRAX_RUN, *args], where, log))
            for args, log in zip(arguments, logs, strict=True)
        ]
        for proc in procs:
            proc.wait(timeout=timeout)
    outputs = "\n".join(f"== worker {w}\n" + log_text(log)[-4000:] for w, log in enumerate(logs))
    assert [p.returncode for p in procs] == [0] * len(arguments), outputs
    return outputs


@pytest.fixture(scope="module", params=["journal", "sqlite"])
def shared_study(request, tmp_path_factory):
    """Run WORKERS sweeps on one study at once; (launch dir, storage, worker logs)."""
    where = tmp_path_factory.mktemp(f"workers_{request.param}")
    storage = str(where / "shared.journal") if request.param == "journal" else f"sqlite:///{where}/shared.db"
    # Both workers start on a new MLflow store and (with sqlite) a new Optuna database: whoever
    # opens one first creates its tables while the other waits on the lock beside it.
    outputs = run_together(
        where,
        [
            [
                "-m",
                "hydra/sweeper=optuna",
                "hydra/sweeper/sampler=random",
                "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
                "hydra.sweeper.study_name=shared",
                f"hydra.sweeper.storage={storage}",
                f"hydra.sweeper.n_trials={N_TRIALS}",
                f"hydra.sweeper.n_jobs={N_JOBS}",
                "train.epochs=1",
                "data_set.n_samples=200",
                f"hydra.sweep.dir={where}/multiruns/worker_{w}",
            ]
            for w in range(WORKERS)
        ],
        timeout=150,
    )
    return where, storage, outputs


def test_sweep_workers_share_one_study(shared_study):
    where, storage, outputs = shared_study
    trials = study_of(storage, "shared").get_trials()
    states = [t.state.name for t in trials]
    # Neither worker failed the other's running trials as stale, and no trial was left running.
    assert set(states) == {"COMPLETE"}, (states, outputs)
    assert len({t.number for t in trials}) == len(trials)
    owners = {t.user_attrs.get("hyrax_sweep_dir") for t in trials}
    assert owners == {str(where / "multiruns" / f"worker_{w}") for w in range(WORKERS)}, owners
    # n_trials is the study's size, not each worker's: the workers stop once the study has it.
    # A worker sizes its next batch as n_trials minus the study's finished trials and the trials
    # other workers are running (hyrax/search/sweeper.py, next_batch_size). What is left is the race
    # of two workers asking in the same instant, which Optuna's storages cannot prevent: the
    # overshoot is at most (WORKERS - 1) * N_JOBS.
    assert N_TRIALS <= len(trials) <= N_TRIALS + (WORKERS - 1) * N_JOBS, (states, outputs)


def test_sweep_workers_on_one_study_each_track_their_trials(shared_study):
    where, storage, outputs = shared_study
    trials = study_of(storage, "shared").get_trials()
    parents, children = parent_and_children(mlflow_runs(where))
    # One parent per worker, each FINISHED, whose children are the trials that worker ran.
    assert len(parents) == WORKERS and {p.info.status for p in parents} == {"FINISHED"}, outputs
    assert sorted(int(c.data.tags["hyrax.trial_number"]) for c in children) == sorted(
        t.number for t in trials
    )
    assert {c.data.tags["hyrax.optuna_state"] for c in children} == {"COMPLETE"}
    by_parent = {p.info.run_id: Path(p.data.tags["hyrax.sweep_dir"]) for p in parents}
    owner = {t.number: t.user_attrs["hyrax_sweep_dir"] for t in trials}
    for child in children:
        assert (
            str(by_parent[child.data.tags["mlflow.parentRunId"]])
            == owner[int(child.data.tags["hyrax.trial_number"])]
        )


def test_sweeps_started_together_on_a_fresh_mlflow_store_both_track(tmp_path):
    # Array tasks start in the same second, and the first run on a store creates its tables. Two
    # sweeps doing that at once must both get their parent run and their child runs.
    outputs = run_together(
        tmp_path,
        [
            [
                "-m",
                "optimizer.lr=0.01",
                "train.epochs=1",
                "data_set.n_samples=200",
                f"hydra.sweep.dir={tmp_path}/multiruns/worker_{w}",
            ]
            for w in range(WORKERS)
        ],
        timeout=120,
    )
    assert "Callback" not in outputs, outputs  # Hydra turns a callback's exception into a warning
    parents, children = parent_and_children(mlflow_runs(tmp_path))
    assert len(parents) == WORKERS and {p.info.status for p in parents} == {"FINISHED"}, outputs
    assert sorted(c.data.tags["mlflow.parentRunId"] for c in children) == sorted(
        p.info.run_id for p in parents
    )
