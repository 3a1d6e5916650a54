"""Helpers for tests that run the real `hyrax-run` and read the real MLflow store it wrote."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
HYRAX_RUN = BIN / "hyrax-run"
T = TypeVar("T")


def hyrax_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment runs get: the user package importable, no inherited tracking URI."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


def run_hyrax(
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    program: str | Path = HYRAX_RUN,
) -> subprocess.CompletedProcess:
    """Run `hyrax-run ARGS` in `cwd` to its end, capturing its output; the result's `.cwd` is `cwd`.

    `env` is the whole environment (default `hyrax_env()`). `program` is the `hyrax-run` to use (an
    installed wheel's), or `sys.executable` to run a script that uses the Python API. A run that
    outlives `timeout` is killed and fails the test with what it printed so far.
    """
    command = [str(program), *args]
    try:
        proc = subprocess.run(
            command,
            cwd=cwd,
            env=hyrax_env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        raise AssertionError(
            f"{' '.join(command)} did not finish within {timeout:g} s\n"
            f"STDOUT:\n{_text(err.stdout)}\nSTDERR:\n{_text(err.stderr)}"
        ) from None
    proc.cwd = cwd  # type: ignore[attr-defined]
    return proc


def _text(output: str | bytes | None) -> str:
    """Captured output of a timed-out process as text (subprocess hands it over as bytes)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


@contextmanager
def started(
    command: Sequence[str | Path], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Start a long-lived process (a server, a run to interrupt) with its stdout and stderr in `log`.

    `env` is the whole environment (default `hyrax_env()`). On leaving the block the process and
    everything it started (it gets a session of its own) are stopped: SIGTERM, then SIGKILL.
    """
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(c) for c in command],
            cwd=cwd,
            env=hyrax_env() if env is None else env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_as_from_a_shell,
        )
    try:
        yield proc
    finally:
        stop(proc)


def _as_from_a_shell() -> None:
    """In the child, before it runs: Ctrl-C and SIGTERM as a shell leaves them (default, unblocked).

    A child inherits an ignored signal and the blocked-signal mask of the thread that starts it, and the
    test process runs libraries (loky, torch's compile workers) that ignore or block SIGINT for a
    while; a run started then would never see the Ctrl-C a test sends it.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """End a process from `started` and its session: SIGTERM, SIGKILL after `grace` seconds; leftovers
    of a process that has already ended (workers of a killed run) get SIGKILL."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    """Send `sig` to the session `started` gave `proc` (its process group), if any of it is left."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    log: Path | Callable[[], str] | None = None,
    proc: subprocess.Popen | None = None,
    every: float = 0.2,
) -> T:
    """Poll `condition()` until it returns something true, and return that.

    Fails, naming `what` (the awaited state: "the server answering /health") and showing the end of
    `log` (a file, or a function giving text), when `timeout` seconds pass or when `proc` ends first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()  # it may have got there on its way out
            if value:
                return value
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}{_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{_tail(log)}")
        time.sleep(every)


def _tail(log: Path | Callable[[], str] | None, chars: int = 6000) -> str:
    """The end of a process's log, for a failure message."""
    if log is None:
        return ""
    text = log() if callable(log) else log_text(log)
    return f"\n--- log ---\n{text[-chars:]}"


def log_text(log: Path) -> str:
    """What a process from `started` has written to its log so far ('' before it wrote anything)."""
    return log.read_text(errors="replace") if log.exists() else ""


def mlflow_runs(cwd: Path, experiment: str = "hyrax") -> list:
    """All runs of the experiment in `<cwd>/mlflow.db`, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "no MLflow experiment was created"
    runs = client.search_runs([exp.experiment_id])
    return sorted(runs, key=lambda r: r.info.start_time)


def metric_history(cwd: Path, run_id: str, key: str) -> list[float]:
    """The logged values of one metric, in step order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@dataclass(frozen=True)
class Store:
    """A real MLflow SQLite store, `<root>/mlflow.db`, and the experiment one test tracks its runs in.

    Creating a store costs seconds, so in-process tests share one (the `store` fixture), each in an
    experiment of its own.
    """

    root: Path
    experiment: str

    @property
    def overrides(self) -> list[str]:
        """The settings that make a run track into this store and experiment."""
        return [
            f"mlflow.tracking_uri=sqlite:///{self.root}/mlflow.db",
            f"mlflow.experiment={self.experiment}",
        ]

    def runs(self) -> list:
        """The experiment's runs, oldest first."""
        return mlflow_runs(self.root, self.experiment)

    def history(self, run_id: str, key: str) -> list[float]:
        """The logged values of one metric of one run, in step order."""
        return metric_history(self.root, run_id, key)


def run_dirs(cwd: Path) -> list[Path]:
    """The run directories `hyrax-run` made under `<cwd>/runs`, oldest first."""
    return sorted((p for p in (cwd / "runs").glob("*/*") if p.is_dir()), key=lambda p: p.stat().st_mtime)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert a run succeeded, showing its output when not."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc


def user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert a run failed as bad input: exit 2, one message with each needle, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in:\n{proc.stderr}"
    return proc.stderr


def parent_and_children(runs: list) -> tuple[list, list]:
    """A multirun's MLflow runs split into its parent run(s) and the job/trial child runs."""
    from hyrax import tags

    parents = [r for r in runs if r.data.tags.get(tags.KIND) == tags.KIND_SWEEP]
    children = [r for r in runs if tags.PARENT_RUN_ID in r.data.tags]
    return parents, children


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether an HTTP GET of `url` gets an answer."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def mlflow_server(
    root: Path, port: int | None = None, log_name: str = "server.log", env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real MLflow tracking server on 127.0.0.1 over `<root>/server.db` with proxied artifacts, up
    (answering /health) until the block ends; gives its URL and process. The same `root` and `port`
    bring a stopped server back with its runs. `env`: its whole environment (default `hyrax_env()`)."""
    port = port or free_port()
    command = [
        BIN / "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/server.db",
        "--artifacts-destination",
        root / "artifacts",
        "--workers",
        "1",
    ]
    url, log = f"http://127.0.0.1:{port}", root / log_name
    with started(command, root, log, env) as proc:
        wait_until(
            lambda: answers(f"{url}/health"), 120, f"the mlflow server answering {url}/health", log, proc
        )
        yield url, proc
