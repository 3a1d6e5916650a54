"""The Python API and the verb dispatch that `hyrax-run` and notebooks share.

from hyrax import Hyrax
h = Hyrax(overrides=["data_set=synthetic_regression", "criterion=mse"])
h.config["optimizer"]["lr"] = 1e-3
ds = h.prepare()
h.train()
h.infer()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hyrax.config import COMPONENT_GROUPS, PRIMARY_CONFIG
from hyrax.errors import HyraxError
from hyrax.session import Session, as_plain

VERBS = ("train", "test", "infer", "prepare", "export")


def run_verb(
    config: dict[str, Any],
    run_dir: Path,
    launch_dir: Path,
    on_epoch_end: Callable[..., None] | None = None,
    given: Sequence[str] = (),
) -> Any:
    """Run `config["verb"]`: `train` gives a `TrainResult`, `infer` an `InferenceResult`.

    `given` lists the config keys the user set; one that nothing uses is an error (see
    `hyrax.train.components.check_all_used`).
    """
    from hyrax.compat.normalize import normalize
    from hyrax.ranges import check_ranges
    from hyrax.run_lookup import resolve_run_ids

    check_ranges(config)
    normalize(with_package_tables(config))
    verb = config.get("verb", "train")
    if verb == "train" and config.get("ckpt_path"):
        raise HyraxError(
            "ckpt_path names the checkpoint that test, infer and export use; training does not read it",
            key="ckpt_path",
            fix="to continue training from a checkpoint, set train.resume=<run dir, .pt file or run id>",
        )
    unread = [key for key in given if key.startswith("export.")] if verb != "export" else []
    if unread:
        raise HyraxError(
            f"{unread[0]} was set, but only verb=export reads the export settings (this is verb={verb})",
            key=unread[0],
            fix="add verb=export ckpt_path=<run> to export a model, or drop the setting",
        )
    resolve_run_ids(config, launch_dir)  # ckpt_path=<run id>, train.resume=<run id>: their paths
    if verb == "train":
        from hyrax.train.run import train

        return train(config, run_dir, launch_dir, on_epoch_end, given)
    if verb in VERBS:
        from hyrax.train import verbs

        return getattr(verbs, verb)(config, run_dir)
    raise HyraxError(f"unknown verb '{verb}'", key="verb", fix=f"use one of: {', '.join(VERBS)}")


def with_package_tables(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the top-level tables the chosen classes' packages ship (Hyrax's `[mypkg.MyModel]`)."""
    from hyrax.compat.package_defaults import package_tables, with_defaults
    from hyrax.resolve import locate_target

    for group in COMPONENT_GROUPS:
        target = (config.get(group) or {}).get("_target_")
        if target:
            with_defaults(config, package_tables(locate_target(group, target)))
    return config


def run(cfg: DictConfig) -> Any:
    """The task `hyrax-run` hands to Hydra: run the verb in Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hyrax.compat.overrides import given_keys
    from hyrax.redact import install_log_redaction

    install_log_redaction()  # also in jobs that run in processes of their own (Slurm, workers)
    hydra_cfg = HydraConfig.get()
    config = as_plain(cfg)
    task_overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from hyrax.multirun import attach_job

        attach_job(config, Path(hydra_cfg.sweep.dir), task_overrides, int(hydra_cfg.job.num))
    from hyrax.train.distributed import slurm_ranks

    ranks = slurm_ranks()
    other_rank = ranks is not None and not ranks.main  # a Slurm task that is not rank 0 reports nothing
    result = run_verb(
        config,
        Path(hydra_cfg.runtime.output_dir),
        Path(hydra_cfg.runtime.cwd),
        None if other_rank else epoch_reporter(config),
        given_keys(task_overrides),
    )
    return getattr(result, "objective", result)  # a sweeper optimises the objective


def epoch_reporter(config: dict[str, Any]) -> Callable[[int, dict[str, float]], None] | None:
    """When the job is an Optuna trial, a hook that reports each epoch's objective (so it can be pruned)."""
    from hyrax.search.trial import current_trial_number, open_trial

    if current_trial_number() is None:
        return None
    reporter = open_trial()
    wanted = config["train"]["objective"]["metric"]
    metric = wanted if isinstance(wanted, str) else wanted[0]

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if reporter is not None and metric in metrics:
            reporter.report(metrics[metric], epoch)

    return report


def new_run_dir(root: Path, results_dir: str = "runs") -> Path:
    """A fresh run directory that no other run shares, even one started in the same second."""
    from hyrax.config import unique_suffix

    now = datetime.now()
    return root / results_dir / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}_{unique_suffix()}"


class Hyrax:
    """A configured Hyrax session for notebooks and scripts, on the same code path as `hyrax-run`.

    `config` is a nested dict to edit before `prepare()`, `train()`, `test()` or `infer()`;
    Hyrax's spellings work too: `h.config["model"]["name"] = "pkg.MyModel"` (which loads that
    class's defaults at once), `h.set_config("train.epochs", 1)`, `Hyrax(config_file="hyrax_config.toml")`
    (read by default from `./hyrax_config.toml`, as Hyrax does).
    """

    def __init__(
        self,
        overrides: Sequence[str] = (),
        config_file: str | os.PathLike | None = None,
        config_name: str = PRIMARY_CONFIG,
    ) -> None:
        from hyrax.redact import install_log_redaction

        install_log_redaction()
        self.launch_dir = Path(os.getcwd())
        self._session = Session(overrides, config_file, config_name)
        self.last_run_dir: Path | None = None
        self.objective: float | list[float] | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The config to edit: plain nested dicts, as `hyrax-run --cfg job` shows it."""
        return self._session.config

    def set_config(self, key: str, value: Any) -> None:
        """Set one dotted key (`"train.epochs"`, `"model.name"`) or a Hyrax table (`"data_request"`)."""
        self._session.set(key, value)

    def _run(self, verb: str, **overrides: Any) -> Any:
        config, given = self._session.final_config()
        config.update(verb=verb, **overrides)
        run_dir = new_run_dir(self.launch_dir, config["general"]["results_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
        return run_verb(config, run_dir, self.launch_dir, given=given)

    def prepare(self) -> Any:
        """Build the data set and describe it; returns the data set object."""
        return self._run("prepare")

    def train(self) -> Any:
        """Train and return the trained model; the objective is kept in `objective`, the run directory
        in `last_run_dir`."""
        result = self._run("train")
        self.last_run_dir, self.objective = result.run_dir, result.objective
        return result.model

    def _checkpoint(self, ckpt_path: str | None) -> str | None:
        return (
            ckpt_path
            or self.config.get("ckpt_path")
            or (str(self.last_run_dir) if self.last_run_dir else None)
        )

    def test(self, ckpt_path: str | None = None) -> Any:
        """Test-split metrics of a checkpoint (default: the run this session just trained)."""
        return self._run("test", ckpt_path=self._checkpoint(ckpt_path))

    def export(self, ckpt_path: str | None = None) -> Any:
        """The checkpoint's model (default: the run this session just trained) as `model.onnx`, checked
        in onnxruntime against torch; returns an `ExportResult` (its `path` and `max_difference`)."""
        return self._run("export", ckpt_path=self._checkpoint(ckpt_path))

    def infer(self, ckpt_path: str | None = None) -> Any:
        """Predictions of a checkpoint (default: the run this session just trained) as an indexable
        `InferenceResult` with their ids; `predictions.npy` and `ids.npy` are written too."""
        return self._run("infer", ckpt_path=self._checkpoint(ckpt_path))
