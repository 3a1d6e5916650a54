"""One MLflow parent run per multirun, with each job or trial as a child run.

The parent is created in the sweep process before the first job starts (which also creates the
store's schema and the experiment, so parallel children never race on them) and recorded in
`<sweep dir>/mlflow_parent.json`. A job, in this process or on another machine sharing the sweep
directory, reads that file and attaches its run to the parent with the same tracking URI.
"""

from __future__ import annotations

import atexit
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hyrax import tags
from hyrax.redact import redact
from hyrax.sweep_summary import child_runs, summarise
from hyrax.tags import clip_tag

log = logging.getLogger("hyrax")
PARENT_FILE = "mlflow_parent.json"
RESULT_FILES = ("optimization_results.yaml",)


def parent_info(sweep_dir: Path) -> dict[str, str] | None:
    """The parent run a job of this sweep belongs to (None when the sweep tracks nothing)."""
    path = sweep_dir / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class MultirunTracking(Callback):
    """Hydra callback: opens the parent run at multirun start, summarises and closes it at the end."""

    def __init__(self) -> None:
        self.info: dict[str, str] | None = None
        self.client: Any = None
        self.ended = False
        self.interrupted = False

    def _note_ctrl_c(self) -> None:
        """Remember a Ctrl-C (SIGINT) before it becomes Python's KeyboardInterrupt: the sweep then
        ends its runs KILLED, not FAILED."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            self.interrupted = True
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.mlflow.enabled:
            return
        self._note_ctrl_c()
        try:
            self._open_parent(config)
        except Exception as err:  # Hydra would only warn and run the whole sweep untracked
            from hyrax.errors import HyraxError

            problem = (
                err
                if isinstance(err, HyraxError)
                else HyraxError(
                    f"cannot open the sweep's MLflow run: {redact(str(err))}",
                    key="mlflow.tracking_uri",
                    fix="check the MLflow store, or set mlflow.enabled=false",
                )
            )
            sys.stderr.write(problem.render() + "\n")
            raise SystemExit(HyraxError.exit_code) from err

    def _open_parent(self, config: DictConfig) -> None:
        from hyrax.tracking import client_for, tracking_uri

        sweep_dir = Path(config.hydra.sweep.dir)
        launch_dir = Path(config.hydra.runtime.cwd)
        uri = tracking_uri(config.mlflow.tracking_uri, launch_dir)
        self.client = client_for(uri)
        from hyrax.run_names import fixed_keys
        from hyrax.run_notes import objective_words
        from hyrax.sweep_record import sweep_label

        run_id = self._reopened(sweep_dir) or self._new_parent(config, sweep_dir, uri, launch_dir)
        run = self.client.get_run(run_id).info
        objective = config.train.objective
        self.info = {
            "run_id": run_id,
            "tracking_uri": uri,
            "experiment_id": run.experiment_id,
            "experiment": config.mlflow.experiment,
            "direction": str(objective.direction),
            "metric": objective.metric if isinstance(objective.metric, str) else ", ".join(objective.metric),
            "objective": objective_words(objective.metric, objective.direction),
            "sweep_dir": str(sweep_dir),
            "label": sweep_label(config),
            "name": run.run_name,
            "fixed_keys": fixed_keys(list(config.hydra.overrides.task)),
            "command": sweep_command(config)[0],
        }
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(json.dumps(self.info))
        atexit.register(self._end_if_unfinished)
        log.info("MLflow parent run %s (%s)", self.info["run_id"], uri)

    def _reopened(self, sweep_dir: Path) -> str | None:
        """The parent of an earlier, interrupted run of the same sweep (same sweep dir), reopened."""
        earlier = parent_info(sweep_dir)
        if earlier is None:
            return None
        self.client.update_run(earlier["run_id"], status="RUNNING")
        log.info("continuing the sweep's MLflow parent run %s", earlier["run_id"])
        return earlier["run_id"]

    def _new_parent(self, config: DictConfig, sweep_dir: Path, uri: str, launch_dir: Path) -> str:
        from hyrax.run_names import sweep_run_name
        from hyrax.sweep_record import sweep_label, sweep_params
        from hyrax.tracking import ensure_experiment, log_params

        experiment = ensure_experiment(self.client, config.mlflow.experiment, uri, launch_dir)
        overrides = list(config.hydra.overrides.task)
        command, typed = sweep_command(config)
        parent_tags = {
            tags.SWEEP_DIR: str(sweep_dir.resolve()),
            tags.KIND: tags.KIND_SWEEP,
            tags.SWEEPER: str(config.hydra.sweeper.get("_target_", "")),
            tags.LAUNCHER: str(config.hydra.launcher.get("_target_", "")),
            tags.COMMAND: clip_tag(command),
            tags.NOTE: f"**Command:** `{command}`\n\nRunning: the table of trials comes at the end.",
            tags.OBJECTIVE_METRIC: str(config.train.objective.metric),
            tags.OBJECTIVE_DIRECTION: str(config.train.objective.direction),
            **sweep_provenance(launch_dir),
        }
        name = sweep_run_name(sweep_label(config), typed)
        run_id = self.client.create_run(experiment, run_name=name, tags=parent_tags).info.run_id
        log_params(self.client, run_id, sweep_params(config, overrides))
        log_environment(self.client, run_id, launch_dir)
        return run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.info is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        self._record_stop(sweep_dir)
        try:
            summarise(self.client, self.info, sweep_dir, self.info["command"], self.info["objective"])
        except Exception as err:  # the trials' own runs are complete: a summary must not fail the sweep
            log.warning("could not summarise the sweep on its MLflow run: %s", redact(str(err)))
        for name in RESULT_FILES:
            if (sweep_dir / name).is_file():
                self.client.log_artifact(self.info["run_id"], str(sweep_dir / name))
        if (sweep_dir / "plots").is_dir():
            self.client.log_artifacts(self.info["run_id"], str(sweep_dir / "plots"), "plots")
        self.client.set_terminated(self.info["run_id"], "FINISHED")
        self.ended = True
        from hyrax.ui_links import where_lines

        for line in where_lines(
            self.info["tracking_uri"], self.info["experiment_id"], self.info["run_id"], "sweep"
        ):
            log.info("%s", line)

    def _record_stop(self, sweep_dir: Path) -> None:
        """Put why an Optuna sweep stopped, and the compute its trials used, on the parent."""
        results = sweep_results(sweep_dir)
        if "stopped_because" in results:
            self.client.set_tag(
                self.info["run_id"], tags.STOPPED_BECAUSE, clip_tag(results["stopped_because"])
            )
        for name in (tags.TRIAL_SECONDS, tags.WALL_SECONDS):
            if isinstance(results.get(name), (int, float)):
                self.client.log_metric(self.info["run_id"], name, float(results[name]))

    def _end_if_unfinished(self) -> None:
        """The sweep failed or was interrupted: close the parent (KILLED after Ctrl-C, else FAILED),
        and children whose jobs died without closing theirs."""
        if self.info is None or self.ended:
            return
        try:
            self._record_stop(Path(self.info["sweep_dir"]))
            status = "KILLED" if self.interrupted else "FAILED"
            for child in child_runs(self.client, self.info):
                if child.info.status == "RUNNING":
                    self.client.set_terminated(child.info.run_id, status)
            self.client.set_terminated(self.info["run_id"], status)
        except Exception:
            pass


def sweep_command(config: DictConfig) -> tuple[str, list[str]]:
    """The sweep's command line as typed, and its overrides (as Hydra has them when not typed), with any
    password masked."""
    from hyrax.run_notes import command_line, typed_command

    typed = typed_command()
    command, overrides = typed if typed is not None else (None, list(config.hydra.overrides.task))
    command = command or command_line(overrides, multirun=True)
    return redact(command), [redact(o) for o in overrides]


def sweep_provenance(launch_dir: Path) -> dict[str, str]:
    """The provenance tags of the sweep's parent run (its children record their own)."""
    from hyrax.provenance import source_tags
    from hyrax.run_notes import PROGRAM

    return source_tags(launch_dir, [PROGRAM])


def log_environment(client: Any, run_id: str, launch_dir: Path) -> None:
    """The installed packages (once per sweep: its children leave them out) and any uncommitted
    changes, as artifacts of the parent run (not kept in the sweep dir, whose folders are its jobs)."""
    import tempfile

    from hyrax.provenance import environment_files

    with tempfile.TemporaryDirectory(prefix="hyrax-sweep-env-") as folder:
        for path in environment_files(launch_dir, Path(folder), with_requirements=True):
            client.log_artifact(run_id, str(path))


def sweep_results(sweep_dir: Path) -> dict[str, Any]:
    """What an Optuna sweep wrote in `optimization_results.yaml` ({} for other sweeps)."""
    path = sweep_dir / RESULT_FILES[0]
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(path))
    return loaded if isinstance(loaded, dict) else {}


def attach_job(config: dict[str, Any], sweep_dir: Path, overrides: list[str], job_number: int) -> None:
    """Point a job's tracking at its sweep's parent run and store, tag what it sweeps, and name it
    `<sweep> #<trial> <its values>` (a grid's jobs by their job number)."""
    from hyrax.run_names import child_run_name, swept_overrides
    from hyrax.search.trial import current_trial_number

    info = parent_info(sweep_dir)
    if info is None or not config["mlflow"]["enabled"]:
        return
    config["mlflow"]["parent_run_id"] = info["run_id"]
    config["mlflow"]["tracking_uri"] = info["tracking_uri"]
    config["mlflow"]["experiment"] = info["experiment"]
    config["mlflow"]["tags"] = {
        **config["mlflow"]["tags"],
        tags.OVERRIDES: clip_tag(redact(" ".join(overrides))),
    }
    if not config["mlflow"]["run_name"]:
        number = current_trial_number()
        swept = swept_overrides(overrides, info.get("fixed_keys", []))
        label = info.get("label", "sweep")
        config["mlflow"]["run_name"] = child_run_name(label, job_number if number is None else number, swept)


def tag_trial(sweep_dir: Path, number: int, state: str) -> None:
    """Record an Optuna trial's final state on its child run (a killed job's run is closed as FAILED)."""
    info = parent_info(sweep_dir)
    if info is None:
        return
    from hyrax.tracking import client_for

    client = client_for(info["tracking_uri"])
    runs = client.search_runs(
        [info["experiment_id"]],
        filter_string=(
            f"tags.`{tags.PARENT_RUN_ID}` = '{info['run_id']}' and tags.`{tags.TRIAL_NUMBER}` = '{number}'"
        ),
    )
    for run in runs:
        client.set_tag(run.info.run_id, tags.OPTUNA_STATE, state)
        if run.info.status == "RUNNING" and state == "FAIL":
            client.set_terminated(run.info.run_id, "FAILED")
    if not runs:  # the job died before it could start its run: keep one child per trial all the same
        child_tags = {
            tags.PARENT_RUN_ID: info["run_id"],
            tags.TRIAL_NUMBER: str(number),
            tags.OPTUNA_STATE: state,
            tags.ERROR: "the job ended before it started tracking",
        }
        run = client.create_run(info["experiment_id"], run_name=f"trial {number}", tags=child_tags)
        client.set_terminated(run.info.run_id, "FAILED" if state == "FAIL" else "FINISHED")


def optuna_callback(config: DictConfig) -> Any:
    """A callback for the Optuna sweep that records each told trial's state on its child run."""
    sweep_dir = Path(str(config.hydra.sweep.dir))

    def record(study: Any, trial: Any) -> None:
        tag_trial(sweep_dir, trial.number, trial.state.name)

    return record
