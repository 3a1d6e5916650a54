"""What a training run writes about itself to MLflow besides its metrics: its name, its parameters (the
experiment's config, not the tracking plumbing), its tags and provenance, its description, its
config and environment files and its data set.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyrax import tags
from hyrax.run_names import single_run_name
from hyrax.run_notes import PROGRAM, command_line, objective_words, result_words, run_note, typed_command
from hyrax.search.trial import current_trial_number
from hyrax.tracking import flatten

log = logging.getLogger("hyrax")
# The config sections that are the experiment: MLflow parameters are these, flattened.
PARAM_SECTIONS = ("model", "data_set", "criterion", "optimizer", "scheduler", "train")
CONFIG_FILES = ("config.yaml", "overrides.yaml")


def experiment_params(config: Mapping[str, Any], unused: Sequence[str] = ()) -> dict[str, str]:
    """`model.hidden`, `optimizer.lr`, `train.epochs`, ...: the flattened experiment config, but for the
    `unused` sections (a LightningModule's `configure_optimizers` decides its optimizer)."""
    return flatten({k: config[k] for k in PARAM_SECTIONS if config.get(k) is not None and k not in unused})


def given_overrides(config: Mapping[str, Any], given: Sequence[str]) -> list[str]:
    """The overrides that made this run: Hydra's task overrides on the command line; in the Python
    API, each key the user set with its value."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return [f"{key}={_lookup(config, key)}" for key in given]


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _typed(config: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """A single run's command line as the user typed it (a sweep's job is described by its own
    overrides, which re-run it alone)."""
    from hydra.core.hydra_config import HydraConfig

    if config["mlflow"].get("parent_run_id") or not HydraConfig.initialized():
        return None
    return typed_command()


def run_name(config: Mapping[str, Any], overrides: Sequence[str]) -> str:
    """`mlflow.run_name` when set (a sweep sets its children's), else `<model> <overrides> <time>`."""
    typed = _typed(config)
    return config["mlflow"]["run_name"] or single_run_name(config, typed[1] if typed else overrides)


def _command(config: Mapping[str, Any], overrides: Sequence[str]) -> str:
    from hydra.core.hydra_config import HydraConfig

    typed = _typed(config)
    if typed is not None:
        return typed[0]
    if HydraConfig.initialized() or config["mlflow"].get("parent_run_id"):
        return command_line(overrides)
    return f"Hyrax(...) in Python, with {' '.join(overrides) or 'the defaults'}"


def note(
    config: Mapping[str, Any],
    run_dir: Path,
    overrides: Sequence[str],
    result: str | None = None,
) -> str:
    """The run's description: its command, its directory and what its objective means."""
    from hyrax.multirun import parent_info

    parent = None
    if config["mlflow"].get("parent_run_id"):
        info = parent_info(run_dir.parent) or {}
        if info.get("run_id") == config["mlflow"]["parent_run_id"]:
            parent = (info["experiment_id"], info["run_id"], info.get("name") or "parent")
    objective = config["train"]["objective"]
    return run_note(
        _command(config, overrides),
        str(run_dir.resolve()),
        objective_words(objective["metric"], objective["direction"]),
        parent,
        result,
    )


def final_note(
    config: Mapping[str, Any], run_dir: Path, overrides: Sequence[str], value: Any, state: Any
) -> str:
    """The description at the end: the same, with the objective's value and its epoch."""
    epochs = config["train"]["epochs"]
    return note(config, run_dir, overrides, result_words(value, state.best_epoch, epochs, "finished"))


def run_tags(
    config: Mapping[str, Any], run_dir: Path, launch_dir: Path, overrides: Sequence[str]
) -> dict[str, str]:
    """Tags that say what ran, where, from what code, and how to read it."""
    from hydra.core.hydra_config import HydraConfig

    from hyrax.provenance import source_tags

    # A hyrax-run job may run in a worker or a Slurm job whose own program is not hyrax-run.
    program = [PROGRAM] if HydraConfig.initialized() else sys.argv
    objective = config["train"]["objective"]
    found = {
        **source_tags(launch_dir, program),
        tags.MODEL: str(config["model"]["_target_"]),
        tags.DATA_SET: str(config["data_set"]["_target_"]),
        tags.RUN_DIR: str(run_dir.resolve()),
        tags.COMMAND: _command(config, overrides),
        tags.NOTE: note(config, run_dir, overrides),
        tags.OBJECTIVE_METRIC: _words(objective["metric"]),
        tags.OBJECTIVE_DIRECTION: _words(objective["direction"]),
        **config["mlflow"]["tags"],
    }
    if config["mlflow"].get("parent_run_id"):
        found[tags.PARENT_RUN_ID] = config["mlflow"]["parent_run_id"]
    if config.get("from_run"):
        found[tags.FROM_RUN] = str(config["from_run"])
    number = current_trial_number()
    if number is not None:
        found[tags.TRIAL_NUMBER] = str(number)
    return found


def _words(value: Any) -> str:
    return value if isinstance(value, str) else ", ".join(str(v) for v in value)


def log_start_files(tracker: Any, config: Mapping[str, Any], run_dir: Path, launch_dir: Path) -> None:
    """The run's config files (under `config/`), its uncommitted changes when there are any, and the
    installed packages (a sweep's child leaves those to its parent), as artifacts."""
    from hyrax.provenance import ENVIRONMENT_DIR, environment_files

    for name in CONFIG_FILES:
        for candidate in (run_dir / ".hydra" / name, run_dir / name):
            if candidate.is_file():
                tracker.log_artifact(candidate, "config")
                break
    child = bool(config["mlflow"].get("parent_run_id"))
    for path in environment_files(launch_dir, run_dir / ENVIRONMENT_DIR, with_requirements=not child):
        tracker.log_artifact(path)


def log_data_set(tracker: Any, config: Mapping[str, Any], data: Any) -> None:
    """The data set as the run's MLflow input (the UI's Datasets column)."""
    tracker.log_dataset(data.data_set, config["data_set"], data.split_sizes)
