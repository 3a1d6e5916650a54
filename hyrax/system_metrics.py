"""MLflow's system metrics (CPU, memory, disk, network, and GPU when present) for a run Hyrax created.

Hyrax creates runs with `MlflowClient(tracking_uri=uri).create_run`, never `mlflow.start_run`, so MLflow
does not start its monitor by itself. `start` starts MLflow's own `SystemMetricsMonitor` for one run and
one tracking URI (given to the monitor, so the process-global URI is never read or changed: jobs with
different stores can share a worker process), at MLflow's sampling interval and samples-before-logging,
which its environment variables set (`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`, default 10 s, and
`MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING`, default 1).

Two things differ from MLflow's monitor as `mlflow.start_run` uses it:
- MLflow drops the samples gathered since the last logging when it is stopped, so a run shorter than one
  interval has no system metrics at all. Here the monitor's thread logs what it has gathered when it
  stops (one fresh sample if it has none) and flushes, so every run ends with each metric at least once.
- `Monitor.stop` waits at most `STOP_WAIT_S` for that thread (MLflow's `finish` waits without limit, which
  an unreachable tracking server would turn into minutes); a late flush goes on in the background.
MLflow's INFO messages about starting and stopping the monitor are dropped: they are noise in a run's log.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

log = logging.getLogger("hyrax")

STOP_WAIT_S = 10.0
MLFLOW_MONITOR_LOGGER = "mlflow.system_metrics.system_metrics_monitor"


class _DropInfo(logging.Filter):
    """Drops INFO records ("Started monitoring system metrics.", "Skip logging GPU metrics...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to keep `record`: anything but INFO."""
        return record.levelno != logging.INFO


def _quiet_mlflow_monitor() -> None:
    """Silence the INFO messages of MLflow's monitor (idempotent); its warnings still show."""
    logger = logging.getLogger(MLFLOW_MONITOR_LOGGER)
    if not any(isinstance(f, _DropInfo) for f in logger.filters):
        logger.addFilter(_DropInfo())


@functools.lru_cache(maxsize=1)
def _monitor_class() -> type:
    """MLflow's `SystemMetricsMonitor` with a last logging when it stops and a bounded `finish`."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class HyraxSystemMetricsMonitor(SystemMetricsMonitor):
        """MLflow's monitor that logs the samples it holds when it stops, and stops within a time limit."""

        def monitor(self) -> None:
            """MLflow's sampling loop, then one last logging of what it gathered."""
            self._first_step = self._logging_step
            try:
                super().monitor()
            finally:
                self.log_remaining()

        def log_remaining(self) -> None:
            """Log the samples not yet logged (a fresh one if this thread logged none) and flush."""
            try:
                if self._logging_step == self._first_step and not self.pending():
                    self.collect_metrics()
                if self.pending():
                    self.publish_metrics(self.aggregate_metrics())
                self.mlflow_logger.flush()
            except Exception as e:
                log.warning("could not log the last system metrics of run %s: %s", self._run_id, e)

        def pending(self) -> bool:
            """Whether samples were gathered since the last logging."""
            return any(monitor.metrics for monitor in self.monitors)

        def finish(self, timeout: float | None = STOP_WAIT_S) -> None:
            """Stop sampling and wait (at most `timeout` s) for the last logging."""
            thread, self._process = self._process, None
            self._shutdown_event.set()
            if thread is None:
                return
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "the last system metrics of run %s are still being sent after %.0f s; "
                    "going on without waiting",
                    self._run_id,
                    timeout,
                )

    return HyraxSystemMetricsMonitor


class Monitor:
    """System metrics being logged to one run; `stop()` ends it."""

    def __init__(self, inner: Any, run_id: str) -> None:
        self._inner = inner
        self.run_id = run_id
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self) -> None:
        """Stop sampling and log what was gathered (safe to call more than once)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._inner.finish()
        except Exception as e:
            log.warning("could not stop the system metrics of run %s: %s", self.run_id, e)


def start(run_id: str, tracking_uri: str, *, resume: bool = False) -> Monitor | None:
    """Start logging system metrics to run `run_id` of the store at `tracking_uri` (None if impossible).

    `resume=True` continues the run's system metrics after their last step (a resumed run); otherwise
    they start at step 0.
    """
    try:
        _quiet_mlflow_monitor()
        inner = _monitor_class()(run_id, resume_logging=resume, tracking_uri=tracking_uri)
        inner.start()
    except Exception as e:  # psutil missing (ImportError), an unreachable store, ...
        log.warning("system metrics are not logged for this run: %s", e)
        return None
    if inner._process is None:  # MLflow could not start its thread (and said why)
        return None
    return Monitor(inner, run_id)
