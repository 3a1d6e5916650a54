"""Hydra adapter for `hyrax.search.sweeper.OptunaSweep`, registered as `hydra/sweeper=optuna`.

Hydra imports this module on every run, so it must stay cheap: optuna and the sweep logic
are imported only when the sweeper is set up.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hyrax.search.config import register_configs

register_configs()


class OptunaSweeper(Sweeper):
    """Optuna (ask-and-tell) sweeper; the config schema is `hyrax.search.config.OptunaSweeperConf`.

    The settings are checked when the sweep is set up, not here: Hydra would wrap an error raised
    while it instantiates the sweeper into its own, and the message naming the bad key would be lost.
    """

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float = 0.0,
        search_space: DictConfig | None = None,
        params: DictConfig | None = None,
        custom_search_space: str | None = None,
        pruner: Any | None = None,
        enqueue_trials: Any | None = None,
        timeout: float | None = None,
        stop_when: Any | None = None,
        plots: bool = True,
    ) -> None:
        self.settings: dict[str, Any] = {
            "sampler": sampler,
            "direction": direction,
            "storage": storage,
            "study_name": study_name,
            "n_trials": n_trials,
            "n_jobs": n_jobs,
            "max_failure_rate": max_failure_rate,
            "search_space": search_space,
            "params": params,
            "custom_search_space": custom_search_space,
            "pruner": pruner,
            "enqueue_trials": enqueue_trials,
            "timeout": timeout,
            "stop_when": stop_when,
            "plots": plots,
        }
        self.impl: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hyrax.multirun import optuna_callback
        from hyrax.search.sweeper import OptunaSweep

        self.impl = OptunaSweep(**self.settings, callbacks=[optuna_callback(config)])
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        """Run the sweep; like Hydra's sweepers, return nothing (the study is in its storage)."""
        self.impl.sweep(arguments)


class OptunaSweeperConfigs(SearchPathPlugin):
    """Re-stores the sweeper configs after Hydra's plugin scan, so they win any name clash.

    A released `hydra-optuna-sweeper` stores `hydra/sweeper=optuna` too; whichever module
    the scan imports last would win. Hydra runs search-path plugins after the scan.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_configs()
