"""Eight `hyrax-run -m` sweep processes on one Optuna study: the README's shared-study recipe at scale.

PROCESSES sweeps start at the same moment with the same `hydra.sweeper.study_name` and
`hydra.sweeper.storage`, the same sampler and the same sampler seed, each with its own
`hydra.sweep.dir`, and together run N_TRIALS tiny trials: once on a journal file, once on a real
MariaDB (`.ci/rdb.sh`, reached as `mysql+pymysql://...`). Then the study must hold exactly N_TRIALS
COMPLETE trials, none with a parameter set another one ran, and the MLflow store exactly one FINISHED
child run per COMPLETE trial and one FINISHED parent per process.

The MariaDB comes from `.ci/rdb.sh`: used when it is running, else started for the session and
stopped at its end. Failing to start it is an error with CI set, otherwise its tests skip with the
reason. Run with `-s` to see each storage's wall time (it is in the failure messages too).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from hyraxtest import HYRAX_RUN, hyrax_env, log_text, mlflow_server, started, stop

from hyrax import tags
from hyrax.search.asking import NOT_COUNTED_ATTR
from hyrax.search.ownership import OWNER_ATTR

pytestmark = pytest.mark.slow  # 8 sweep processes, 400 trials, servers: minutes

ROOT = Path(__file__).resolve().parents[2]
RDB = ROOT / ".ci" / "rdb.sh"
PROCESSES = 8
N_TRIALS = 400
TIMEOUT_S = 600  # per storage, for all the processes together
# A trial the sweeper asked but did not run (a repeat of another's parameters, one past n_trials) is
# told FAIL with the user attr NOT_COUNTED_ATTR saying why. No sweep dies in this test, so a trial
# "left running by a sweep that died" would be a live trial killed: it would show as a FAILED child.
# The tiniest real trial: 64 samples in one batch, one epoch, one trial at a time per process (n_jobs=1:
# 8 processes already oversubscribe the 2 cores). `model.hidden` is a choice, so that a repeated
# parameter set is a repeated (lr, hidden) pair, and the random sampler with ONE seed for every
# process, as the README's Slurm array script has it.
SWEEP = [
    "-m",
    "hydra/sweeper=optuna",
    "hydra/sweeper/sampler=random",
    "hydra.sweeper.sampler.seed=0",
    "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
    "model.hidden=choice(8, 16)",
    f"hydra.sweeper.n_trials={N_TRIALS}",
    "hydra.sweeper.n_jobs=1",
    "train.epochs=1",
    "data_set.n_samples=64",
    "train.batch_size=64",
    "hydra.sweeper.plots=false",  # eight plots of one study cost ~40 s here; one process could draw them
]


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _rdb(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RDB), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def rdb_url() -> Iterator[str]:
    """The `mysql+pymysql://` URL of the MariaDB of `.ci/rdb.sh` (its database `optuna`), or
    `$HYRAX_RDB_URL` when set (`.ci/run` sets it; or a database of your own).

    A server already running is used and left running; otherwise it is started here and stopped at
    the end of the session. (With xdist each worker is a session: `--dist loadfile` keeps this file's
    tests on one worker, and `.ci/run` starts the server before pytest.)
    """
    if os.environ.get("HYRAX_RDB_URL"):
        yield os.environ["HYRAX_RDB_URL"]
        return
    started_here = False
    if _rdb("status", 30).returncode != 0:
        proc = _rdb("start", 600)  # on CI this may apt-get install mariadb-server first
        if proc.returncode != 0:
            why = f"no MariaDB: `bash .ci/rdb.sh start` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            if _ci():
                pytest.fail(why)
            pytest.skip(why)
        started_here = True
    try:
        env = _rdb("env", 30)
        found = re.search(r"^export HYRAX_RDB_URL=(\S+)$", env.stdout, re.M)
        assert env.returncode == 0 and found, f"`bash .ci/rdb.sh env` gave no URL:\n{env.stdout}{env.stderr}"
        yield found.group(1)
    finally:
        if started_here:
            _rdb("stop", 120)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 over an SQLite file, artifacts proxied; its URL.

    One server for the module: each storage's sweeps track into an experiment of their own.

    Why a server: eight processes must not lose runs, and the README sends many concurrent jobs to a
    server rather than to one SQLite file. Why SQLite behind it: the server is then its only writer,
    and it kept up (every run arrives). Measured here (8 processes x 160 trials on the journal,
    2 cores shared with other work): SQLite 126 s, a second database of the MariaDB 141 s, and the
    MariaDB-backed server took 27 s instead of 16 s to start (MLflow migrating a fresh MySQL schema);
    it would also make the journal half of this test depend on MariaDB.
    Job execution (MLflow's huey worker processes, unused here) is off: three fewer processes.
    """
    root = tmp_path_factory.mktemp("scale_mlflow")
    env = hyrax_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    with mlflow_server(root, env=env) as (url, proc):
        yield url
        assert proc.poll() is None, (
            f"the mlflow server died during the sweeps:\n{log_text(root / 'server.log')[-4000:]}"
        )


@dataclass
class Outcome:
    """What the processes of one storage left behind."""

    kind: str
    storage: str
    study_name: str
    tracking_uri: str
    where: Path
    wall_s: float
    returncodes: list[int | None]
    outputs: str

    @property
    def head(self) -> str:
        trials = f"{PROCESSES} processes, {N_TRIALS} trials"
        return f"[{self.kind}] {trials}: wall {self.wall_s:.1f} s (logs in {self.where})"

    def study(self) -> optuna.Study:
        from hyrax.search.storage import open_storage

        return optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage))


def run_together(where: Path, arguments: list[list[str]], env: dict[str, str], timeout: float):
    """Start one `hyrax-run` per argument list at once and wait for all (killing what outlives
    `timeout`); (wall seconds, return codes, the end of each log)."""
    logs = [where / f"process_{p}.log" for p in range(len(arguments))]
    t0 = time.monotonic()
    with ExitStack() as stack:
        procs = [
            stack.enter_context(started([HYRAX_RUN, *args], where, log, env))
            for args, log in zip(arguments, logs, strict=True)
        ]
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, t0 + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(proc, grace=5)
        wall = time.monotonic() - t0
        codes = [p.returncode for p in procs]
    outputs = "\n".join(f"== process {p}\n{log_text(log)[-3000:]}" for p, log in enumerate(logs))
    return wall, codes, outputs


@pytest.fixture(scope="module", params=["journal", "mariadb"])
def outcome(request, tracking: str, tmp_path_factory) -> Outcome:
    """The PROCESSES sweeps of one storage, run to their end (a fresh study and MLflow experiment)."""
    kind = request.param
    where = tmp_path_factory.mktemp(f"scale_{kind}")
    # A fresh study every time: the MariaDB outlives the session when it was running already.
    study_name = f"scale_{kind}_{uuid.uuid4().hex[:8]}"
    storage = str(where / "study.journal") if kind == "journal" else request.getfixturevalue("rdb_url")
    arguments = [
        [
            *SWEEP,
            f"mlflow.experiment={study_name}",
            f"hydra.sweeper.study_name={study_name}",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweep.dir={where}/multiruns/process_{p}",
        ]
        for p in range(PROCESSES)
    ]
    # One torch thread per process: eight processes on two cores are oversubscribed already.
    env = hyrax_env({"MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    wall, codes, outputs = run_together(where, arguments, env, TIMEOUT_S)
    result = Outcome(kind, storage, study_name, tracking, where, wall, codes, outputs)
    print(f"\n{result.head}")  # the measurement this test exists for: shown with -s
    return result  # MariaDB keeps the study (a new name every run), to look at after a failure


def rejection(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why the sweeper rejected `trial` without running it (numbers left out), or None."""
    why = trial.user_attrs.get(NOT_COUNTED_ATTR)
    return None if why is None else re.sub(r"[0-9]+", "N", str(why))[:60]


def test_the_processes_run_exactly_n_trials_each_parameter_set_once(outcome: Outcome) -> None:
    trials = outcome.study().get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    rejected = [t for t in trials if t.state.name == "FAIL" and rejection(t)]
    others = Counter(t.state.name for t in trials if t not in complete and t not in rejected)
    numbers = Counter(t.number for t in trials)
    params = Counter(tuple(sorted(t.params.items())) for t in complete)
    repeated = {p: n for p, n in params.items() if n > 1}
    owners = Counter(t.user_attrs.get(OWNER_ATTR, "?").rsplit("_", 1)[-1] for t in complete)
    summary = (
        f"{outcome.head}; exit codes {outcome.returncodes}; {len(trials)} trials in the study: "
        f"{len(complete)} COMPLETE, {len(rejected)} rejected asks {dict(Counter(map(rejection, rejected)))}, "
        f"others {dict(others)}; "
        f"{sum(repeated.values()) - len(repeated)} COMPLETE trials repeat another's parameters "
        f"({len(repeated)} parameter sets run more than once, up to {max(repeated.values(), default=1)} "
        f"times); COMPLETE trials per process {dict(sorted(owners.items()))}"
    )
    print(summary)
    problems = []
    if outcome.returncodes != [0] * PROCESSES:
        problems.append(f"exit codes {outcome.returncodes}")
    if len(complete) != N_TRIALS:
        problems.append(f"{len(complete)} COMPLETE trials, not {N_TRIALS}")
    if others:
        problems.append(f"trials neither COMPLETE nor rejected asks: {dict(others)}")
    if any(n > 1 for n in numbers.values()):
        problems.append("a trial number occurs twice in the study")
    if repeated:
        problems.append(f"{len(repeated)} parameter sets ran more than once")
    assert not problems, f"{'; '.join(problems)}\n{summary}\n{outcome.outputs[-6000:]}"


def all_runs(client, experiment_id: str) -> list:
    """Every run of an experiment, all pages of the server's answer."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def test_every_complete_trial_has_one_finished_mlflow_child(outcome: Outcome) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name(outcome.study_name)
    assert experiment is not None, f"{outcome.head}: no MLflow experiment\n{outcome.outputs[-6000:]}"
    runs = all_runs(client, experiment.experiment_id)
    parents = [r for r in runs if r.data.tags.get(tags.KIND) == tags.KIND_SWEEP]
    children = [r for r in runs if tags.PARENT_RUN_ID in r.data.tags]
    trials = outcome.study().get_trials(deepcopy=False)
    complete = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    per_trial = Counter(
        int(c.data.tags[tags.TRIAL_NUMBER]) for c in children if tags.TRIAL_NUMBER in c.data.tags
    )
    twice = sorted(n for n, k in per_trial.items() if k > 1)
    missing = sorted(complete - set(per_trial))
    extra = sorted(set(per_trial) - complete)
    states = Counter(c.info.status for c in children)
    summary = (
        f"{outcome.head}; {len(parents)} parent runs {dict(Counter(p.info.status for p in parents))}, "
        f"{len(children)} child runs {dict(states)}; {len(complete)} COMPLETE trials; trial numbers with "
        f"2+ children: {len(twice)}, COMPLETE trials without a child: {len(missing)}, children of trials "
        f"not COMPLETE: {len(extra)}"
    )
    print(summary)
    problems = []
    if len(parents) != PROCESSES or {p.info.status for p in parents} != {"FINISHED"}:
        problems.append("not one FINISHED parent per process")
    if sum(per_trial.values()) != len(children):
        problems.append("child runs without a trial number")
    if twice:
        problems.append(f"trials run twice: {twice[:20]}")
    if missing or extra:
        problems.append(f"without a child: {missing[:20]}; not COMPLETE: {extra[:20]}")
    if set(states) - {"FINISHED"}:
        problems.append(f"child runs not FINISHED: {dict(states)}")
    assert not problems, f"{'; '.join(problems)}\n{summary}\n{outcome.outputs[-4000:]}"
