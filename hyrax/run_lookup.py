"""A recorded run, found by its MLflow run id: its tags, artifacts and run directory.

`ckpt_path=<run id>` (verbs test, infer, export) and `train.resume=<run id>` name a run instead of a
path. `resolve_run_ids` turns such a value into a path before the verb runs: the run's directory
(`hyrax.run_dir`) when it exists on this machine, else, for `ckpt_path` only, the run's logged
checkpoint (`checkpoints/best.pt`, logged with `mlflow.log_checkpoint=true`) downloaded to
`<launch dir>/.hyrax/runs/<id>/checkpoints/`. A value that exists as a path stays a path.

`open_run`, `check_drift` and `warn_changed_packages` serve `from_run` too (see `hyrax.rerun`):
whether the code and packages here are those the run recorded. `open_run` never creates a store: a
SQLite file that does not exist is reported, not made. mlflow is imported only when a run is looked up.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyrax import tags
from hyrax.errors import HyraxError
from hyrax.redact import redact

log = logging.getLogger("hyrax")

RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$")
DOWNLOADS = Path(".hyrax") / "runs"  # under the launch directory: checkpoints downloaded by run id
BEST_ARTIFACT = "checkpoints/best.pt"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def is_run_id(value: Any) -> bool:
    """Whether `value` has the form of an MLflow run id (32 hexadecimal characters)."""
    return isinstance(value, str) and bool(RUN_ID.match(value))


def names_run(value: Any, launch_dir: Path) -> bool:
    """Whether a config value names a run: a run id that is not also an existing path."""
    return is_run_id(value) and not Path(value).exists() and not (launch_dir / value).exists()


@dataclass
class RecordedRun:
    """One run of an MLflow store, as `open_run` found it."""

    client: Any
    run: Any  # mlflow.entities.Run
    uri: str

    @property
    def id(self) -> str:
        """The run id."""
        return self.run.info.run_id

    def tag(self, name: str) -> str | None:
        """A tag of the run, or None."""
        return self.run.data.tags.get(name)

    @property
    def run_dir(self) -> Path | None:
        """The run's directory (`hyrax.run_dir`) when it exists on this machine."""
        recorded = self.tag(tags.RUN_DIR)
        return Path(recorded) if recorded and Path(recorded).is_dir() else None

    def missing_dir(self) -> str:
        """Words for a run directory that is not here (for an error message)."""
        recorded = self.tag(tags.RUN_DIR)
        return (
            f"its directory {recorded} is not on this machine" if recorded else "it recorded no run directory"
        )

    def sweep_hint(self, key: str) -> str | None:
        """For a sweep's parent run (no config, no checkpoint of its own): which run to give instead."""
        if self.tag(tags.KIND) != tags.KIND_SWEEP:
            return None
        best = self.tag(tags.BEST_RUN_ID)
        return f"this is a sweep's parent run: give {key}=<one of its child runs>" + (
            f", its best is {key}={best}" if best else ""
        )

    def inherited_tag(self, name: str) -> str | None:
        """A tag of the run, else of its sweep's parent run."""
        value = self.tag(name)
        parent = self.parent() if value is None else None
        return parent.tag(name) if parent is not None else value

    def parent(self) -> RecordedRun | None:
        """The sweep's parent run of a child run, or None."""
        parent_id = self.tag(tags.PARENT_RUN_ID)
        if not parent_id:
            return None
        try:
            return RecordedRun(self.client, self.client.get_run(parent_id), self.uri)
        except Exception as err:  # a vanished parent only means less to compare
            log.debug("parent run %s of %s not readable: %s", parent_id, self.id, err)
            return None

    def download(self, artifact: str, dest: Path) -> Path | None:
        """Download one artifact file into folder `dest` (as `dest/<its name>`); None when it is missing."""
        try:
            dest.mkdir(parents=True, exist_ok=True)
            with _no_progress_bar():
                return Path(self.client.download_artifacts(self.id, artifact, str(dest.resolve())))
        except Exception as err:  # MLflow raises several kinds for "not there"
            log.debug("artifact %s of run %s not downloaded: %s", artifact, self.id, err)
            return None

    def artifact_text(self, artifact: str) -> str | None:
        """The text of one artifact file, or None when the run has no such artifact."""
        with tempfile.TemporaryDirectory(prefix="hyrax-artifact-") as tmp:
            path = self.download(artifact, Path(tmp))
            return path.read_text(errors="replace") if path is not None and path.is_file() else None

    def artifact_size(self, artifact: str) -> int | None:
        """The size in bytes of one artifact file, or None when it is not listed."""
        folder = artifact.rpartition("/")[0] or None
        try:
            listed = self.client.list_artifacts(self.id, folder)
        except Exception:
            return None
        return next((f.file_size for f in listed if f.path == artifact and not f.is_dir), None)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar for each download, even of a few bytes: not while Hyrax reads."""
    before = os.environ.get(PROGRESS_BAR_ENV)
    os.environ[PROGRESS_BAR_ENV] = "false" if before is None else before
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)


def _where(uri: str, key: str, run_id: str) -> str:
    """How to point Hyrax at the store that has the run (the fix of a lookup error)."""
    return (
        f"run from the directory run {run_id} was launched in (its mlflow.db), or set "
        f"mlflow.tracking_uri=... (or MLFLOW_TRACKING_URI) to the store that has it; `{key}` takes the "
        "run id shown in the MLflow UI or in <run dir>/hyrax_run.json"
    )


def open_run(run_id: str, uri: str, key: str) -> RecordedRun:
    """The run `run_id` of the store at `uri`; a `HyraxError` naming `key` when it cannot be read."""
    if not is_run_id(run_id):
        raise HyraxError(
            f"'{run_id}' is not an MLflow run id (32 hexadecimal characters)",
            key=key,
            fix="copy the run id from the MLflow UI or from <run dir>/hyrax_run.json",
        )
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise HyraxError(
            f"there is no MLflow store at {uri.removeprefix('sqlite:///')}, so no run {run_id}",
            key=key,
            fix=_where(uri, key, run_id),
        )
    from mlflow.exceptions import MlflowException

    from hyrax.tracking import client_for

    try:
        client = client_for(uri)
        return RecordedRun(client, client.get_run(run_id.lower()), uri)
    except HyraxError as err:  # a tracking server that does not answer
        raise HyraxError(err.message, key=key, fix=f"{err.fix}; then give {key} again") from None
    except MlflowException as err:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")) or "not found" in str(err):
            raise HyraxError(
                f"the MLflow store {redact(uri)} has no run {run_id}", key=key, fix=_where(uri, key, run_id)
            ) from None
        raise _unreadable(uri, key, run_id, err) from None
    except Exception as err:  # an unreachable or broken store, whatever MLflow raised
        raise _unreadable(uri, key, run_id, err) from None


def _unreadable(uri: str, key: str, run_id: str, err: BaseException) -> HyraxError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return HyraxError(
        f"could not read run {run_id} from the MLflow store {redact(uri)}: {redact(first)}",
        key=key,
        fix="check that the store is reachable; " + _where(uri, key, run_id),
    )


def resolve_run_ids(config: dict[str, Any], launch_dir: Path) -> None:
    """Replace a run id in `train.resume` (training) or `ckpt_path` (other verbs) by a path, in place."""
    from hyrax.tracking import tracking_uri

    uri = tracking_uri(config["mlflow"]["tracking_uri"], launch_dir)
    if config.get("verb", "train") == "train":
        resume = config["train"]["resume"]
        if names_run(resume, launch_dir):
            config["train"]["resume"] = str(resume_dir(resume, uri))
    elif names_run(config.get("ckpt_path"), launch_dir):
        config["ckpt_path"] = str(checkpoint_of(config["ckpt_path"], uri, launch_dir))


def resume_dir(run_id: str, uri: str) -> Path:
    """The directory of run `run_id` to resume (its last.pt continues the run in its own MLflow run)."""
    record = open_run(run_id, uri, "train.resume")
    folder = record.run_dir
    if folder is None:
        raise HyraxError(
            f"run {run_id}: {record.missing_dir()}; resuming needs its checkpoints/last.pt",
            key="train.resume",
            fix=record.sweep_hint("train.resume")
            or "copy the run directory to this machine and give train.resume=<that directory>",
        )
    log.info("train.resume: run %s is the directory %s", run_id, folder)
    return folder


def checkpoint_of(run_id: str, uri: str, launch_dir: Path) -> Path:
    """The checkpoint of run `run_id`: its best in its directory, else its logged one, downloaded."""
    from hyrax.train import checkpoint

    record = open_run(run_id, uri, "ckpt_path")
    folder = record.run_dir
    if folder is not None:
        try:
            found = checkpoint.find(folder)
        except HyraxError:
            log.info("run %s's directory %s has no checkpoint; looking for a logged one", run_id, folder)
        else:
            log.info("ckpt_path: run %s is %s", run_id, found)
            return found
    downloaded = _downloaded_best(record, launch_dir / DOWNLOADS / record.id)
    if downloaded is not None:
        return downloaded
    raise HyraxError(
        f"run {run_id}: {record.missing_dir()}, and it logged no checkpoint",
        key="ckpt_path",
        fix=record.sweep_hint("ckpt_path")
        or "copy the run directory here and give ckpt_path=<that directory>; set "
        "mlflow.log_checkpoint=true for future runs to log their best checkpoint",
    )


def _downloaded_best(record: RecordedRun, dest: Path) -> Path | None:
    """The run's logged best checkpoint under `dest/checkpoints/` (reused when already there, same size)."""
    cached = dest / BEST_ARTIFACT
    size = record.artifact_size(BEST_ARTIFACT)
    if size is None:
        return None
    if cached.is_file() and cached.stat().st_size == size:
        log.info("ckpt_path: run %s's logged checkpoint, downloaded before: %s", record.id, cached)
        return cached
    path = record.download(BEST_ARTIFACT, cached.parent)  # a file arrives under its own name
    if path is not None:
        log.info("ckpt_path: downloaded run %s's logged checkpoint to %s", record.id, path)
    return path


ALLOW_DRIFT = "from_run_allow_drift"
MAX_LISTED_PACKAGES = 5


def check_drift(record: RecordedRun, launch_dir: Path, allow: bool) -> None:
    """Refuse (or with `allow`, warn) when the code here is not at the run's recorded git commit, or
    has uncommitted changes where the run had none; a `HyraxError` naming `from_run_allow_drift`."""
    from hyrax.provenance import git_state

    state = git_state(launch_dir)
    commit = record.inherited_tag(tags.GIT_COMMIT)
    if state is None or not commit:
        if state is not None:
            log.info("from_run: run %s recorded no git commit; the code cannot be compared", record.id)
        return
    was_dirty = record.inherited_tag(tags.GIT_DIRTY) == "true"
    problem, fix = None, f"set {ALLOW_DRIFT}=true to run anyway, or `git checkout {commit[:12]}`"
    if commit != state.commit:
        now = f"{state.commit[:7]}{' with uncommitted changes' if state.dirty else ''}"
        problem = f"run {record.id} was recorded at commit {commit[:7]}, the code here is at {now}"
    elif state.dirty and not was_dirty:
        problem = (
            f"run {record.id} was recorded at a clean {commit[:7]}; the code here has uncommitted changes"
        )
        fix = f"set {ALLOW_DRIFT}=true to run anyway, or `git stash` the changes"
    if problem is None:
        if was_dirty:
            log.warning(
                "from_run: run %s had uncommitted changes (artifact %s)", record.id, tags.GIT_DIFF_FILE
            )
        return
    if not allow:
        raise HyraxError(problem, key=ALLOW_DRIFT, fix=fix)
    log.warning("from_run: %s (%s=true: running anyway)", problem, ALLOW_DRIFT)


def warn_changed_packages(record: RecordedRun) -> None:
    """Warn, naming the first few, when installed packages differ from the run's `requirements.txt`
    (its own, or its sweep parent's)."""
    from hyrax.provenance import changed_packages

    text = record.artifact_text(tags.REQUIREMENTS_FILE)
    parent = record.parent() if text is None else None
    text = parent.artifact_text(tags.REQUIREMENTS_FILE) if parent is not None else text
    if text is None:
        log.debug("from_run: run %s recorded no %s", record.id, tags.REQUIREMENTS_FILE)
        return
    changes = changed_packages(text)
    if changes:
        more = len(changes) - MAX_LISTED_PACKAGES
        listed = ", ".join(changes[:MAX_LISTED_PACKAGES]) + (f" and {more} more" if more > 0 else "")
        log.warning("from_run: installed packages differ from run %s's: %s", record.id, listed)
