"""One job's MLflow run, kept off the training loop's hot path and through a tracking server's outages.

The store is opened and the run created in a background thread while the data and model are built.
Everything written after that (metric batches, tags, artifacts, the final status) goes into an
outbox that the same thread sends in order: a step never waits on the store. A write that fails
for a reason that may pass (the server is restarting, the network is down) stays first in the
outbox and is sent again at the next flush; at the end of the run Hyrax keeps trying for
`mlflow.outage_wait_s` seconds. Whatever is still unsent then is written to
`<run dir>/mlflow_unsent.jsonl` and the log says what it was, so nothing is lost silently.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyrax.errors import HyraxError
from hyrax.redact import redact, redact_values
from hyrax.tags import MAX_METRICS_PER_BATCH, clip_tag
from hyrax.tracking import client_for, ensure_experiment, log_params

log = logging.getLogger("hyrax")
UNSENT_FILE = "mlflow_unsent.jsonl"
TEXT_ARTIFACTS = (".yaml", ".yml", ".json", ".txt", ".log", ".toml")
MASKED_COPY_PREFIX = "hyrax-masked-"


@dataclass
class Write:
    """One write to the run: what it is (for the log and the unsent file) and how to send it."""

    kind: str  # metrics | tags | artifact | dataset | status
    payload: Any
    send: Callable[[Any, str, Any], None] = field(repr=False)  # (client, run_id, payload)


class Tracker:
    """One MLflow run: started in the background, fed buffered metrics, ended with a status."""

    def __init__(self, uri: str, experiment: str, launch_dir: Path, outage_wait_s: float = 30.0) -> None:
        self.uri, self.experiment, self.launch_dir = uri, experiment, launch_dir
        self.outage_wait_s = outage_wait_s
        self.unsent_dir: Path | None = None  # where unsent writes go at the end (the run directory)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyrax-mlflow")
        self._buffer: list[tuple[str, float, int, int]] = []
        self._outbox: deque[Write] = deque()
        self._lock = threading.Lock()
        self._drain_queued = False
        self._last_drain: Future | None = None
        self._started: Future | None = None
        self._outage: str | None = None  # why the last send failed, while the outbox is stuck
        self._had_outage = False
        self.client: Any = None
        self.mirrors: list[Callable[[Mapping[str, float], int], None]] = []  # e.g. TensorBoard

    def start(
        self,
        run_name: str | None,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> None:
        """Open the store and create (or reopen) the run, without waiting for it (secrets masked)."""
        self._started = self._pool.submit(
            self._start, run_name, dict(params), redact_values(dict(tags)), resume_run_id
        )

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
                f"cannot use the MLflow store at {redact(self.uri)}: {redact(str(err))}",
                key="mlflow.tracking_uri",
                fix="check mlflow.tracking_uri / MLFLOW_TRACKING_URI, or set mlflow.enabled=false",
            ) from err

    def _start(
        self, run_name: str | None, params: dict[str, str], tags: dict[str, str], resume_run_id: str | None
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
        """Buffer metrics for `step`; they are written at the next flush (and to each mirror now)."""
        for mirror in self.mirrors:
            mirror(metrics, step)
        now = int(time.time() * 1000)
        self._buffer.extend((k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics to the background writer."""
        if self._buffer:
            batch, self._buffer = self._buffer, []
            for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
                self._send(Write("metrics", batch[i : i + MAX_METRICS_PER_BATCH], _send_metrics))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (in the background, in one call)."""
        self._send(Write("tags", {k: clip_tag(redact(str(v))) for k, v in tags.items()}, _send_tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts (in the background); text files with secrets masked."""
        self._send(Write("artifact", (str(_masked_copy(path)), artifact_path), _send_artifact))

    def log_dataset(self, data_set: Any, node: Mapping[str, Any], split_sizes: Mapping[str, int]) -> None:
        """Record the data set as the run's MLflow input (in the background; never fails the run)."""
        from hyrax.dataset_record import dataset_input

        try:
            described = dataset_input(data_set, node, split_sizes)
        except Exception as err:
            log.warning("could not describe the data set for MLflow: %s", err)
            return
        if described is not None:
            self._send(Write("dataset", described, _send_dataset))

    def wait(self) -> None:
        """Block until what was handed to the writer so far has been tried (an outage is retried later)."""
        drain = self._last_drain
        if drain is not None:
            drain.exception()

    def _send(self, write: Write) -> None:
        with self._lock:
            self._outbox.append(write)
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        with self._lock:
            if self._drain_queued:
                return
            self._drain_queued = True
        self._last_drain = self._pool.submit(self._drain)

    def _drain(self) -> None:
        """Send the outbox in order; stop at the first write that fails for a passing reason."""
        with self._lock:
            self._drain_queued = False
        while self._outbox:
            write = self._outbox[0]
            try:
                write.send(self.client, self.run_id, write.payload)
            except Exception as err:
                if _is_permanent(err):
                    log.warning("MLflow refused a write (%s), dropped: %s", write.kind, err)
                else:
                    if self._outage is None:
                        log.warning(
                            "MLflow at %s is unreachable; Hyrax keeps the run's writes and retries: %s",
                            self.uri,
                            str(err).splitlines()[0] if str(err) else type(err).__name__,
                        )
                    self._outage, self._had_outage = str(err), True
                    return
            self._outbox.popleft()
            if self._outage is not None:
                log.warning("MLflow at %s answers again; sending what was kept", self.uri)
                self._outage = None

    def finish(self, status: str) -> None:
        """Write everything still buffered, set FINISHED / FAILED / KILLED, and say what could not be sent."""
        if self._started is None or self._started.exception() is not None:
            self._pool.shutdown(wait=True)  # no run to write to: its error was reported by `run_id`
            return
        self.flush()
        self._send(Write("status", status, _send_status))
        deadline = time.monotonic() + self.outage_wait_s
        self.wait()
        while self._outbox and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            self._schedule_drain()
            self.wait()
        self._pool.shutdown(wait=True)
        if self._outbox:
            self._report_unsent(status)
        elif self._had_outage:
            log.info("MLflow was unreachable for a while; every write was stored after retrying")

    def _report_unsent(self, status: str) -> None:
        unsent = list(self._outbox)
        counts = {kind: sum(1 for w in unsent if w.kind == kind) for kind in ("tags", "artifact")}
        values = [m for w in unsent if w.kind == "metrics" for m in w.payload]
        steps = sorted({m[3] for m in values})
        where = self._write_unsent(unsent)
        lost = [f"{len(values)} metric values" + (f" (steps {steps[0]}-{steps[-1]})" if steps else "")]
        lost += [f"{n} {kind} write(s)" for kind, n in counts.items() if n]
        if any(w.kind == "status" for w in unsent):
            lost.append(f"the run's status {status} (MLflow still shows it RUNNING)")
        log.warning(
            "MLflow at %s could not be reached for %g s at the end of the run: %s were not stored%s. "
            "Last error: %s",
            self.uri,
            self.outage_wait_s,
            ", ".join(lost),
            f"; they are kept in {where}" if where else "",
            self._outage.splitlines()[0] if self._outage else "unknown",
        )

    def _write_unsent(self, unsent: list[Write]) -> Path | None:
        if self.unsent_dir is None:
            return None
        path = self.unsent_dir / UNSENT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            for write in unsent:
                out.write(
                    json.dumps(
                        {"run_id": self.run_id, "kind": write.kind, "payload": write.payload}, default=str
                    )
                    + "\n"
                )
        return path


def _send_metrics(client: Any, run_id: str, batch: list[tuple[str, float, int, int]]) -> None:
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in batch])


def _send_tags(client: Any, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _send_artifact(client: Any, run_id: str, where: tuple[str, str | None]) -> None:
    client.log_artifact(run_id, where[0], where[1])
    copy = Path(where[0]).parent
    if copy.name.startswith(MASKED_COPY_PREFIX):  # sent: the masked copy has done its job
        shutil.rmtree(copy, ignore_errors=True)


def _send_dataset(client: Any, run_id: str, described: Any) -> None:
    client.log_inputs(run_id, datasets=[described])


def _send_status(client: Any, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status)


def _is_permanent(err: Exception) -> bool:
    """MLflow rejected the write itself (a 4xx answer): sending it again would not help."""
    code = getattr(err, "get_http_status_code", None)
    return code is not None and 400 <= int(code()) < 500


def _masked_copy(path: Path) -> Path:
    """`path`, or a copy of it with secrets masked when it is a text file that holds any."""
    path = Path(path)
    if path.suffix not in TEXT_ARTIFACTS or not path.is_file():
        return path
    text = path.read_text(errors="replace")
    masked = redact(text)
    if masked == text:
        return path
    copy = Path(tempfile.mkdtemp(prefix=MASKED_COPY_PREFIX)) / path.name
    copy.write_text(masked)
    return copy


class NullTracker(Tracker):
    """Tracking switched off (`mlflow.enabled=false`): every call does nothing."""

    def __init__(self) -> None:
        self.mirrors = []

    def start(self, *args: Any, **kwargs: Any) -> None:
        return None

    @property
    def run_id(self) -> str:
        return ""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for mirror in self.mirrors:
            mirror(metrics, step)

    def flush(self) -> None:
        return None

    def wait(self) -> None:
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        return None

    def log_dataset(self, data_set: Any, node: Mapping[str, Any], split_sizes: Mapping[str, int]) -> None:
        return None

    def finish(self, status: str) -> None:
        return None
