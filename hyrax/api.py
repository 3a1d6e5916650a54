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
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from hyrax.config import PRIMARY_CONFIG, builtin_dir, register_configs
from hyrax.errors import HyraxError

VERBS = ("train", "test", "infer", "prepare")


def as_plain(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain dicts and lists."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def run_verb(config: dict[str, Any], run_dir: Path, launch_dir: Path,
             on_epoch_end: Optional[Callable[..., None]] = None) -> Any:
    """Run `config["verb"]` and return its result (the objective for `train`)."""
    verb = config.get("verb", "train")
    if verb == "train":
        from hyrax.train.run import train

        return train(config, run_dir, launch_dir, on_epoch_end)
    if verb in VERBS:
        from hyrax.train import verbs

        return getattr(verbs, verb)(config, run_dir)
    raise HyraxError(f"unknown verb '{verb}'", key="verb", fix=f"use one of: {', '.join(VERBS)}")


def run(cfg: DictConfig) -> Any:
    """The task `hyrax-run` hands to Hydra: run the verb in Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    config = as_plain(cfg)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from hyrax.multirun import attach_job

        attach_job(config, Path(hydra_cfg.sweep.dir), list(hydra_cfg.overrides.task))
    return run_verb(config, Path(hydra_cfg.runtime.output_dir), Path(hydra_cfg.runtime.cwd),
                    epoch_reporter(config))


def epoch_reporter(config: dict[str, Any]) -> Optional[Callable[[int, dict[str, float]], None]]:
    """When the job is an Optuna trial, a hook that reports each epoch's objective (so it can be pruned)."""
    trial = config.get("trial") or {}
    if trial.get("number") is None:
        return None
    from hyrax.search.trial import open_trial

    reporter = open_trial(trial)
    wanted = config["train"]["objective"]["metric"]
    metric = wanted if isinstance(wanted, str) else wanted[0]

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if reporter is not None and metric in metrics:
            reporter.report(metrics[metric], epoch)

    return report


def new_run_dir(root: Path) -> Path:
    """A fresh run directory that no other run shares, even one started in the same second."""
    from hyrax.config import unique_suffix

    now = datetime.now()
    return root / "runs" / now.strftime("%Y-%m-%d") / f"{now:%H-%M-%S}_{unique_suffix()}"


class Hyrax:
    """A configured Hyrax session for notebooks and scripts, on the same code path as `hyrax-run`."""

    def __init__(self, overrides: Sequence[str] = (), config_name: str = PRIMARY_CONFIG) -> None:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        register_configs()
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(builtin_dir("conf")), version_base="1.3"):
            self.config: DictConfig = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.set_struct(self.config, False)
        self.launch_dir = Path(os.getcwd())
        self.last_run_dir: Optional[Path] = None

    def _run(self, verb: str, **overrides: Any) -> Any:
        config = as_plain(self.config)
        config.update(verb=verb, **overrides)
        run_dir = new_run_dir(self.launch_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
        result = run_verb(config, run_dir, self.launch_dir)
        if verb == "train":
            self.last_run_dir = run_dir
        return result

    def prepare(self) -> Any:
        """Build the data set and describe it; returns the data set object."""
        return self._run("prepare")

    def train(self) -> Any:
        """Train and return the objective; the run directory is kept in `last_run_dir`."""
        return self._run("train")

    def _checkpoint(self, ckpt_path: Optional[str]) -> Optional[str]:
        return ckpt_path or self.config.get("ckpt_path") or (str(self.last_run_dir) if self.last_run_dir else None)

    def test(self, ckpt_path: Optional[str] = None) -> Any:
        """Test-split metrics of a checkpoint (default: the run this session just trained)."""
        return self._run("test", ckpt_path=self._checkpoint(ckpt_path))

    def infer(self, ckpt_path: Optional[str] = None) -> Any:
        """Write predictions of a checkpoint (default: the run this session just trained)."""
        return self._run("infer", ckpt_path=self._checkpoint(ckpt_path))
