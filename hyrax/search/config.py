"""Structured config schema of the `hydra/sweeper=optuna` sweeper.

The schema is a drop-in for the one of the released `hydra-optuna-sweeper` 1.2/1.3
(same keys, same sampler config group `hydra/sweeper/sampler`), plus `pruner`
(config group `hydra/sweeper/pruner`) and `enqueue_trials`.

This module is imported by Hydra's plugin scan on every run: it must not import optuna.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SWEEPER_TARGET = "hydra_plugins.hyrax_optuna_sweeper.optuna_sweeper.OptunaSweeper"
PROVIDER = "hyrax_optuna_sweeper"


@dataclass
class SamplerConfig:
    """Base of the sampler configs: any `optuna.samplers` class given by `_target_`."""

    _target_: str = MISSING


@dataclass
class TPESamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.TPESampler.html"""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: bool | None = None
    # Trials still running count as if they had the worst value, so that trials asked while others
    # run (n_jobs > 1, sweeps sharing a study) do not propose the same point.
    constant_liar: bool = True


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    """The official plugin's `motpe`: Optuna 4 removed the class; choosing it explains what to use."""

    _target_: str = "hyrax.search.builders.motpe_removed"
    seed: int | None = None
    consider_prior: bool = True
    prior_weight: float = 1.0
    consider_magic_clip: bool = True
    consider_endpoints: bool = True
    n_startup_trials: int = 10
    n_ehvi_candidates: int = 24


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.RandomSampler.html"""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.CmaEsSampler.html

    Needs the `cmaes` package.
    """

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    independent_sampler: Any | None = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Any | None = None
    inc_popsize: int = 2
    use_separable_cma: bool = False
    source_trials: Any | None = None


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.NSGAIISampler.html"""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any | None = None


@dataclass
class GridSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.GridSampler.html

    The grid is built from `params` at sweep time (`_partial_` is kept for compatibility).
    """

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


@dataclass
class QMCSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.QMCSampler.html"""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any | None = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConfig(SamplerConfig):
    """https://optuna.readthedocs.io/en/stable/reference/samplers/generated/optuna.samplers.GPSampler.html

    Needs `scipy` and `torch`.
    """

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    independent_sampler: Any | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any | None = None
    warn_independent_sampling: bool = True


@dataclass
class MedianPrunerConfig:
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.MedianPruner.html"""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class HyperbandPrunerConfig:
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.HyperbandPruner.html"""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class SuccessiveHalvingPrunerConfig:
    """https://optuna.readthedocs.io/en/stable/reference/generated/optuna.pruners.SuccessiveHalvingPruner.html"""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class NopPrunerConfig:
    """A pruner that never prunes (same as `pruner: null`)."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class StopWhenConfig:
    """`hydra.sweeper.stop_when`: stop a sweep early (no new trials; running ones finish)."""

    # Stop once the best objective is at least this good (<= when minimizing, >= when maximizing).
    value: float | None = None
    # Stop after this many finished trials in a row that did not improve the best objective.
    patience: int | None = None


@dataclass
class OptunaSweeperConf:
    """Config of `hydra/sweeper=optuna`; see `hyrax.search.sweeper.OptunaSweep`."""

    _target_: str = SWEEPER_TARGET
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])
    # Sampler and pruner reach the sweeper as configs: it builds them itself and passes the
    # pruner config on to every job.
    _recursive_: bool = False

    # Sampling algorithm, a `_target_` config (config group hydra/sweeper/sampler).
    sampler: SamplerConfig = MISSING
    # "minimize" / "maximize", or a list of them for multi-objective optimization.
    direction: Any = "minimize"
    # null: a JournalStorage file in hydra.sweep.dir. A string with "://" is an RDB URL
    # (e.g. sqlite:///example.db), any other string a journal file path; or a _target_ config.
    storage: Any | None = None
    # null: the Hydra job name.
    study_name: str | None = None
    # Number of FINISHED trials (complete, pruned or failed) the study should end with.
    n_trials: int = 20
    # Number of trials kept running at once. On launchers that run jobs concurrently (pool, local,
    # slurm) a trial starts as soon as another ends; Hydra's basic launcher runs one at a time.
    n_jobs: int = 2
    # The sweep stops once more than max_failure_rate * n_trials trials of this run failed.
    max_failure_rate: float = 0.0
    # Deprecated upstream form of `params` ({name: {type, low, high, log, step, choices}}).
    search_space: dict[str, Any] | None = None
    # {name: override sweep string}, e.g. x: interval(0, 1), y: choice(a, b), z: range(1, 10).
    params: dict[str, Any] | None = None
    # Dotpath to a callable fn(cfg: DictConfig, trial: optuna.trial.Trial) -> None.
    custom_search_space: str | None = None
    # Pruner `_target_` config (config group hydra/sweeper/pruner), rebuilt in every job.
    pruner: Any | None = None
    # Param dicts evaluated first (optuna.Study.enqueue_trial), skipped if already in the study.
    enqueue_trials: list[dict[str, Any]] | None = None
    # Seconds after which no new trial starts (running ones finish); null: no limit.
    timeout: float | None = None
    # Stop early: when the best objective reaches `value`, or after `patience` finished trials in a
    # row without improving it (single objective).
    stop_when: StopWhenConfig = field(default_factory=lambda: StopWhenConfig())
    # Draw the study's plots into <sweep dir>/plots at the end (false: e.g. for all but one of many
    # sweep workers sharing a study, which would each draw the same plots).
    plots: bool = True


_SAMPLERS = {
    "tpe": TPESamplerConfig,
    "motpe": MOTPESamplerConfig,
    "random": RandomSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "grid": GridSamplerConfig,
    "qmc": QMCSamplerConfig,
    "gp": GPSamplerConfig,
}
_PRUNERS = {
    "median": MedianPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "nop": NopPrunerConfig,
}


def register_configs() -> None:
    """Store `hydra/sweeper=optuna` and its sampler/pruner groups in Hydra's ConfigStore.

    Idempotent; called again late in every run so these entries win over a released
    `hydra-optuna-sweeper` that stores the same names.
    """
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
    for name, node in _SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider=PROVIDER)
    for name, node in _PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider=PROVIDER)
