"""Tiny Hydra app for the sweeper tests: cheap objectives, optional crash/NaN/sleep/pruning.

It reports failures as `hyrax-run` does (`hyrax.report.run_and_report`): bad input exits with code 2.

python tests/search/app/quadratic.py -m hydra.sweep.dir=/tmp/s 'x=interval(-5,5)'
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from hyrax.search.trial import current_trial_number, open_trial


def configure(cfg: DictConfig, trial: Any) -> None:
    """custom_search_space hook: z is searched around x."""
    x = trial.params["x"]
    trial.suggest_float("z", x - 0.5, x + 0.5)


def _log(cfg: DictConfig, **record: Any) -> None:
    if cfg.get("log_file"):
        number = current_trial_number()
        own = OmegaConf.to_container(cfg.trial) if "trial" in cfg else None  # an app's own `trial` key
        with open(cfg.log_file, "a") as f:
            line = {"number": number, "pid": os.getpid(), "time": time.time(), "trial": own, **record}
            f.write(json.dumps(line) + "\n")


def _objective(cfg: DictConfig) -> Any:
    x, y = float(cfg.x), float(cfg.y)
    kind = cfg.get("objective", "sphere")
    if kind == "sphere":
        return x**2 + y**2
    if kind == "quadratic":
        return (x - 2) ** 2 + (y + 1) ** 2
    if kind == "multi":
        return [x**2 + y**2, (x - 2) ** 2 + (y - 2) ** 2]
    if kind == "custom":
        return (x - 1) ** 2 + (float(cfg.z) - x) ** 2
    raise ValueError(f"unknown objective {kind}")


def _curve(cfg: DictConfig) -> float:
    """Loss x + 1/(epoch+1), reported every epoch: large x is a bad curve the pruner should stop."""
    reporter = open_trial()
    loss = float("inf")
    for epoch in range(int(cfg.epochs)):
        time.sleep(float(cfg.get("sleep", 0.0)))
        loss = float(cfg.x) + 1.0 / (epoch + 1)
        _log(cfg, event="epoch", epoch=epoch, loss=loss)
        if reporter is not None:
            reporter.report(loss, step=epoch)
    return loss


@hydra.main(version_base="1.3", config_path="conf", config_name="quadratic")
def main(cfg: DictConfig) -> Any:
    _log(cfg, event="start", x=cfg.get("x"))
    if cfg.get("crash_above") is not None and float(cfg.x) > float(cfg.crash_above):
        raise RuntimeError(f"crash for x={cfg.x}")
    if cfg.get("nan_below") is not None and float(cfg.x) < float(cfg.nan_below):
        return float("nan")
    if cfg.get("objective") == "curve":
        value = _curve(cfg)
    else:
        time.sleep(float(cfg.get("sleep", 0.0)) + float(cfg.get("sleep_per_x", 0.0)) * abs(float(cfg.x)))
        value = _objective(cfg)
    _log(cfg, event="end")
    return value


if __name__ == "__main__":
    # Report failures as `hyrax-run` does: bad input is one message and exit code 2, not a traceback.
    import hydra._internal.utils as hydra_utils

    from hyrax import report

    hydra_utils.run_and_report = report.run_and_report
    main()
