"""MLflow tracking of one job, kept off the training loop's hot path.

MLflow is imported and the store opened in a background thread while the data and model are built;
metrics are buffered and written with `log_batch` from that same thread, so a step never waits on
the store (a synchronous `log_metric` costs more than a small model's whole step).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hyrax.errors import HyraxError
from hyrax.locks import sqlite_lock

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000


def tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the configured URI, else `sqlite:///<launch dir>/mlflow.db`."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{launch_dir.resolve()}/mlflow.db"
    )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as `a.b.c -> value` strings, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


@functools.lru_cache(maxsize=8)
def client_for(uri: str) -> Any:
    """An MLflow client for `uri` with its store ready (opening a store is slow: one per process and URI).

    Processes that open a new SQLite store at the same moment (jobs or sweep workers started
    together) would race on creating its tables; a lock file next to the database serialises that.
    """
    from mlflow.tracking import MlflowClient

    with sqlite_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates or migrates the schema
    return client


def ensure_experiment(client: Any, name: str, uri: str, launch_dir: Path) -> str:
    """The id of experiment `name`, created when missing (artifacts next to an SQLite store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (launch_dir.resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    with sqlite_lock(uri):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # another process (on another host: no lock there) created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Log params in batches of MLflow's per-call limit."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])


class Tracker:
    """One MLflow run: started in the background, fed buffered metrics, ended with a status."""

    def __init__(self, uri: str, experiment: str, launch_dir: Path) -> None:
        self.uri, self.experiment, self.launch_dir = uri, experiment, launch_dir
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyrax-mlflow")
        self._buffer: list[Any] = []
        self._started: Future | None = None
        self._pending: list[Future] = []
        self.client: Any = None

    def start(
        self,
        run_name: str | None,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> None:
        """Open the store and create (or reopen) the run, without waiting for it."""
        self._started = self._pool.submit(self._start, run_name, dict(params), dict(tags), resume_run_id)

    @property
    def run_id(self) -> str:
        """The run's id; waits for the store to open and reports a store that cannot be used."""
        assert self._started is not None, "start() first"
        try:
            return self._started.result()
        except HyraxError:
            raise
        except Exception as err:
            raise HyraxError(
                f"cannot use the MLflow store at {self.uri}: {err}",
                key="mlflow.tracking_uri",
                fix="check mlflow.tracking_uri / MLFLOW_TRACKING_URI, or set mlflow.enabled=false",
            ) from err

    def _start(
        self,
        run_name: str | None,
        params: dict[str, str],
        tags: dict[str, str],
        resume_run_id: str | None,
    ) -> str:
        self.client = client_for(self.uri)
        if resume_run_id:
            self.client.update_run(resume_run_id, status="RUNNING")
            return resume_run_id
        experiment = ensure_experiment(self.client, self.experiment, self.uri, self.launch_dir)
        run_id = self.client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
        log_params(self.client, run_id, params)
        return run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metrics for `step`; they are written at the next flush."""
        now = int(time.time() * 1000)
        self._buffer.extend((k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics to the background writer."""
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._pending.append(self._pool.submit(self._write_metrics, batch))

    def _write_metrics(self, batch: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, t, s) for k, v, t, s in batch]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    def wait(self) -> None:
        """Block until everything handed to the writer so far is stored (errors are raised by `finish`)."""
        for future in self._pending:
            future.exception()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (in the background, in one call)."""
        self._pending.append(self._pool.submit(self._write_tags, dict(tags)))

    def _write_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts (in the background)."""
        self._pending.append(
            self._pool.submit(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))
        )

    def finish(self, status: str) -> None:
        """Write everything still buffered, set FINISHED / FAILED / KILLED and wait for the writer."""
        if self._started is None or self._started.exception() is not None:
            self._pool.shutdown(wait=True)  # no run to write to: its error was reported by `run_id`
            return
        self.flush()
        self._pending.append(self._pool.submit(lambda: self.client.set_terminated(self.run_id, status)))
        errors = [f.exception() for f in self._pending if f.exception() is not None]
        self._pool.shutdown(wait=True)
        if errors:
            raise HyraxError(
                f"MLflow logging failed: {errors[0]}",
                key="mlflow.tracking_uri",
                fix="check the MLflow store; the training results are in the run directory",
            )


class NullTracker(Tracker):
    """Tracking switched off (`mlflow.enabled=false`): every call does nothing."""

    def __init__(self) -> None:
        pass

    def start(self, *args: Any, **kwargs: Any) -> None:
        return None

    @property
    def run_id(self) -> str:
        return ""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        return None

    def flush(self) -> None:
        return None

    def wait(self) -> None:
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        return None

    def finish(self, status: str) -> None:
        return None
