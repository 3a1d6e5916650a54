"""The Optuna sweep loop behind ``hydra/sweeper=optuna``: ask a batch, launch it, tell results.

Behaviour beyond the released hydra-optuna-sweeper:

- Persistent by default: with ``storage: null`` the study lives in a journal file
  ``<hydra.sweep.dir>/optuna.journal`` and is always opened with ``load_if_exists``.
  ``n_trials`` is the number of FINISHED trials (complete, pruned or failed) the study should
  end with, so re-running the same command after a crash continues the study. The default
  ``hydra.sweep.dir`` contains a timestamp: to resume, re-run with the same
  ``hydra.sweep.dir=...`` (or a fixed ``storage``/``study_name``). Trials a dead sweep left
  RUNNING are told FAIL at start and their parameters queued again. Several sweep processes
  may share one study (same ``study_name`` and ``storage``, their own sweep dirs): each trial
  records the sweep dir that asked it, and only that sweep declares it dead.
- ``pruner``: rebuilt in every job from ``trial.pruner`` (see :mod:`hyrax.search.trial`).
  A job raising ``optuna.TrialPruned`` is told PRUNED with its last reported value.
- A job that raises, or returns None / NaN / a non-number, is told FAIL and the sweep goes on
  until more than ``max_failure_rate * n_trials`` trials of this run failed; then
  :class:`FailureRateExceeded` stops it.
- ``enqueue_trials``: parameter dicts evaluated first (skipped if already in the study).
- The grid sampler stops the sweep when its grid is done, even if ``n_trials`` is larger.

Every job gets, on top of its parameters, the overrides ``++trial.study_name=...``,
``++trial.storage=...``, ``++trial.number=N`` and ``++trial.pruner=<config or null>``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from hyrax.search import builders, storage
from hyrax.search.space import SearchSpace, format_value, parse_search_space

log = logging.getLogger(__name__)

TrialOverrides = Sequence[str] | Callable[[Trial], Iterable[str]]
Callback = Callable[[optuna.Study, FrozenTrial], None]
RESULTS_FILE = "optimization_results.yaml"
RETRY_ATTR = "hyrax_retry_of"
OWNER_ATTR = "hyrax_sweep_dir"  # which sweep process asked a trial: only it may declare the trial dead
# A sweep records itself on a trial a moment after asking it. An ownerless trial older than this
# was asked by a sweep killed in that moment.
OWNER_GRACE_S = 60.0


class FailureRateExceeded(RuntimeError):
    """More trials failed than ``max_failure_rate`` allows."""


class OptunaSweep:
    """One Optuna study run as a Hydra sweep (follows Hydra's ``Sweeper`` protocol).

    ``trial_overrides`` adds overrides to every job: a list, or a callable of the asked
    ``optuna.trial.Trial``. ``callbacks`` are called as ``cb(study, frozen_trial)`` after each
    trial is told, like the callbacks of ``Study.optimize``.
    """

    def __init__(
        self,
        *,
        sampler: Mapping[str, Any],
        direction: Any = "minimize",
        storage: Any = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 2,
        max_failure_rate: float = 0.0,
        params: Mapping[str, Any] | None = None,
        search_space: Mapping[str, Any] | None = None,
        custom_search_space: str | None = None,
        pruner: Mapping[str, Any] | None = None,
        enqueue_trials: Sequence[Mapping[str, Any]] | None = None,
        trial_overrides: TrialOverrides | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must be in [0, 1], got {max_failure_rate}.")
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}.")
        self.sampler_cfg = sampler
        self.directions = parse_directions(direction)
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.legacy_space = search_space
        self.custom_search_space: Callable[[DictConfig, Trial], None] | None = (
            get_method(custom_search_space) if custom_search_space else None
        )
        self.pruner_cfg = _plain(pruner) or None
        self.enqueue_trials = [dict(_plain(p)) for p in enqueue_trials or ()]
        self.trial_overrides = trial_overrides
        self.callbacks = list(callbacks)

        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.space = SearchSpace()
        self.storage_spec: storage.StorageSpec = ""
        self.is_grid = False
        self.launched = 0
        self.owner = ""
        self.started = datetime.now()
        self.failures: list[tuple[int, str, BaseException | None]] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep Hydra's context and build the launcher (Hydra calls this before ``sweep``)."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        """Run trials until ``n_trials`` have finished in the study; return the study."""
        assert self.config is not None and self.launcher is not None, "call setup() first"
        self.started = datetime.now()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.owner = str(sweep_dir.resolve())
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.space = self.parse_space(arguments)
        study = self.create_study(sweep_dir)
        self.resume(study)
        while (size := self.next_batch_size(study)) > 0:
            trials = [self.ask(study) for _ in range(size)]
            returns = self.launch(trials)
            for trial, job_return in zip(trials, returns, strict=True):
                self.tell(study, trial, job_return)
            self.check_failure_rate()
        self.finish(study, sweep_dir)
        return study

    def parse_space(self, arguments: Sequence[str]) -> SearchSpace:
        """The search space from ``params`` (or legacy ``search_space``) and command-line sweeps."""
        legacy = self.legacy_space
        if legacy and self.params is not None:
            log.warning("Both hydra.sweeper.params and hydra.sweeper.search_space are set; using params.")
            legacy = None
        loader = self.hydra_context.config_loader if self.hydra_context else None
        parser = OverridesParser.create(config_loader=loader)
        return parse_search_space(self.params, arguments, parser=parser, legacy=legacy)

    def create_study(self, sweep_dir: Path) -> optuna.Study:
        """Create or load the study; the sampler is built once the study's size is known."""
        assert self.config is not None
        self.storage_spec = storage.resolve_storage(self.storage, sweep_dir)
        name = self.study_name or str(self.config.hydra.job.name)
        self.study_name = name
        study = optuna.create_study(
            study_name=name,
            storage=storage.open_storage(self.storage_spec),
            sampler=optuna.samplers.RandomSampler(),
            pruner=builders.build_pruner(self.pruner_cfg),
            directions=self.directions,
            load_if_exists=True,
        )
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            raise ValueError(f"Study '{name}' exists with directions {found}, not {self.directions}.")
        self.is_grid = builders.is_grid_sampler(self.sampler_cfg)
        grid = self.space.grid_search_space() if self.is_grid else None
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler = builders.build_sampler(self.sampler_cfg, grid=grid, seed_offset=n_existing)
        log.info(f"Study name: {name}")
        log.info(f"Storage: {storage.describe(self.storage_spec)}")
        log.info(f"Sampler: {type(study.sampler).__name__}")
        log.info(f"Pruner: {type(study.pruner).__name__}")
        log.info(f"Directions: {self.directions}")
        if n_existing:
            log.info(f"Resuming: the study already has {n_existing} trials")
        return study

    def resume(self, study: optuna.Study) -> None:
        """Fail and re-queue trials an earlier run of this sweep left RUNNING; queue ``enqueue_trials``.

        Sweep processes that share a study (same ``study_name`` and ``storage``, their own sweep
        dirs) leave each other's running trials alone: a trial belongs to the sweep dir that asked it.
        """
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
        for trial in trials:
            if trial.state != TrialState.RUNNING or self.owner_of(trial) != self.owner:
                continue
            if trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})
            frozen = self._tell(study, trial.number, None, TrialState.FAIL)
            log.warning(f"Trial {trial.number} was left running by an earlier sweep: told FAIL, queued again")
            for callback in self.callbacks:
                callback(study, frozen)
        for params in self.enqueue_trials:
            study.enqueue_trial(params, skip_if_exists=True)

    def next_batch_size(self, study: optuna.Study) -> int:
        """How many trials to launch next: up to ``n_jobs``, 0 when the sweep is done.

        Trials other sweep processes are running on the same study count as on their way to
        finishing, so that workers sharing a study do not overshoot ``n_trials`` together.
        """
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state.is_finished() for t in trials)
        elsewhere = sum(t.state == TrialState.RUNNING and self.owner_of(t) != self.owner for t in trials)
        size = min(self.n_jobs, self.n_trials - finished - elsewhere)
        if self.is_grid and size > 0:
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if study.sampler.is_exhausted(study) and not waiting:
                log.info(f"The grid is exhausted after {finished} finished trials")
                return 0
            size = min(size, self._grid_points_left(trials) + waiting)
        return max(size, 0)

    def owner_of(self, trial: FrozenTrial) -> str:
        """The sweep dir that asked ``trial``.

        A trial without one was asked by a sweep that has not recorded itself yet. If it was asked
        before this sweep started, or more than ``OWNER_GRACE_S`` ago, that sweep was killed first
        and whoever finds the trial cleans it up (it counts as ours). Otherwise another live sweep
        is about to record itself (``""``: not ours).
        """
        owner = trial.user_attrs.get(OWNER_ATTR)
        if owner is not None:
            return str(owner)
        asked = trial.datetime_start
        recent = asked is not None and (datetime.now() - asked).total_seconds() < OWNER_GRACE_S
        if recent and self.started < asked:
            return ""
        return self.owner

    def ask(self, study: optuna.Study) -> Trial:
        """Ask a trial and suggest all its parameters (``params``, then ``custom_search_space``)."""
        trial = study.ask(fixed_distributions=dict(self.space.distributions))
        try:
            trial.set_user_attr(OWNER_ATTR, self.owner)
            if self.custom_search_space is not None:
                self.custom_search_space(self.config, trial)
            for key, line in self.space.fixed.items():
                trial.set_user_attr(key, line.split("=", 1)[1] if "=" in line else None)
            overlap = set(trial.params) & set(self.space.fixed)
            if overlap:
                raise ValueError(f"Parameters both fixed and searched: {sorted(overlap)}")
        except BaseException:
            self._tell(study, trial.number, None, TrialState.FAIL)
            raise
        return trial

    def job_overrides(self, trial: Trial) -> list[str]:
        """The overrides of the job that runs ``trial``."""
        overrides = [f"{name}={format_value(value)}" for name, value in trial.params.items()]
        overrides.extend(self.space.fixed.values())
        overrides.extend(
            [
                f"++trial.study_name={format_value(self.study_name)}",
                f"++trial.storage={format_value(self.storage_spec)}",
                f"++trial.number={trial.number}",
                f"++trial.pruner={format_value(self.pruner_cfg)}",
            ]
        )
        extra = self.trial_overrides
        if extra is not None:
            overrides.extend(extra(trial) if callable(extra) else extra)
        return overrides

    def launch(self, trials: Sequence[Trial]) -> Sequence[JobReturn]:
        """Launch one job per trial as a single batch; a launcher error fails the whole batch.

        Job numbers are trial numbers when the batch's numbers are consecutive (the usual case).
        """
        batch = [self.job_overrides(trial) for trial in trials]
        self.launched += len(batch)
        try:
            returns = list(self.launcher.launch(batch, initial_job_idx=trials[0].number))
        except Exception as err:
            log.error(f"The launcher failed for trials {[t.number for t in trials]}: {err!r}")
            return [JobReturn(overrides=o, status=JobStatus.FAILED, _return_value=err) for o in batch]
        if len(returns) != len(batch):
            raise RuntimeError(f"The launcher returned {len(returns)} results for {len(batch)} jobs.")
        return returns

    def tell(self, study: optuna.Study, trial: Trial, job_return: JobReturn) -> FrozenTrial:
        """Tell the outcome of a job: COMPLETE, PRUNED, or FAIL (recorded for the failure rate)."""
        state, values, error = self.outcome(job_return)
        frozen = self._tell(study, trial.number, values, state)
        log.info(f"Trial {trial.number} {state.name}: values={frozen.values} params={frozen.params}")
        if state == TrialState.FAIL:
            exc = job_return._return_value if isinstance(job_return._return_value, BaseException) else None
            self.failures.append((trial.number, error or "unknown error", exc))
            from hyrax.report import as_user_error  # bad input needs its message, not a traceback

            crash = exc if exc is not None and as_user_error(exc) is None else None
            log.warning(f"Trial {trial.number} failed: {error}", exc_info=crash)
        for callback in self.callbacks:
            callback(study, frozen)
        return frozen

    def outcome(self, job_return: JobReturn) -> tuple[TrialState, list[float] | None, str | None]:
        """(state, values, error message) of a job; never re-raises the job's exception."""
        result = job_return._return_value
        if job_return.status == JobStatus.COMPLETED:
            values, error = self._values(result)
            return (TrialState.COMPLETE, values, None) if error is None else (TrialState.FAIL, None, error)
        if isinstance(result, optuna.TrialPruned):
            return TrialState.PRUNED, None, None
        if isinstance(result, BaseException):
            return TrialState.FAIL, None, f"{type(result).__name__}: {result}"
        return TrialState.FAIL, None, f"the job did not finish (status {job_return.status.name})"

    def _values(self, result: Any) -> tuple[list[float] | None, str | None]:
        n = len(self.directions)
        expected = "a float" if n == 1 else f"a list of {n} floats"
        try:
            values = [float(result)] if n == 1 else [float(v) for v in result]
        except (TypeError, ValueError):
            return None, f"the job returned {result!r}, expected {expected}"
        if len(values) != n:
            return None, f"the job returned {result!r}, expected {expected}"
        if any(math.isnan(v) for v in values):
            return None, f"the job returned NaN ({result!r})"
        return values, None

    def check_failure_rate(self) -> None:
        """Raise :class:`FailureRateExceeded` once failures pass ``max_failure_rate * n_trials``."""
        allowed = self.max_failure_rate * self.n_trials
        if len(self.failures) <= allowed + 1e-9:
            return
        number, error, cause = self.failures[0]
        raise FailureRateExceeded(
            f"{len(self.failures)} of {self.launched} trials failed in this sweep, more than "
            f"max_failure_rate={self.max_failure_rate} of n_trials={self.n_trials} allows "
            f"({math.floor(allowed + 1e-9)}). First error (trial {number}): {error}"
        ) from cause

    def finish(self, study: optuna.Study, sweep_dir: Path) -> dict[str, Any]:
        """Log the best trial(s); write ``optimization_results.yaml`` and ``plots/*.png`` in the sweep dir."""
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name}
        counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for trial in study.get_trials(deepcopy=False):
            if trial.state.name in counts:
                counts[trial.state.name] += 1
        log.info(f"Finished trials: {counts}")
        if len(self.directions) == 1:
            best = _best_trial(study)
            results["best_params"] = dict(best.params) if best else None
            results["best_value"] = best.value if best else None
            log.info(f"Best parameters: {results['best_params']}")
            log.info(f"Best value: {results['best_value']}")
        else:
            best_trials = study.best_trials
            results["solutions"] = [
                {"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in best_trials
            ]
            log.info(f"Number of Pareto solutions: {len(best_trials)}")
            for t in best_trials:
                log.info(f"    Values: {t.values}, Params: {t.params}")
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        from hyrax.search.plots import PLOTS_DIR, write_plots  # matplotlib only now; never raises

        write_plots(study, sweep_dir / PLOTS_DIR)
        return results

    def _grid_points_left(self, trials: Sequence[FrozenTrial]) -> int:
        total = math.prod(len(v) for v in self.space.grid_search_space().values())
        used = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
        return max(total - len(used), 0)

    def _tell(
        self, study: optuna.Study, number: int, values: list[float] | None, state: TrialState
    ) -> FrozenTrial:
        try:
            frozen = study.tell(number, values, state=state, skip_if_finished=True)
        except RuntimeError:
            # GridSampler calls study.stop() (a RuntimeError outside optimize) in the tell that
            # finishes the grid; the trial is stored before that.
            if not self.is_grid:
                raise
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        if frozen.state != state:  # another process finished it first; the study keeps its verdict
            log.warning(f"Trial {number} was already {frozen.state.name}: its {state.name} is not stored")
        return frozen


def parse_directions(direction: Any) -> list[str]:
    """``"minimize"`` / ``["minimize", "maximize"]`` (or Direction enums) -> list of names."""
    items = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    names = [str(getattr(d, "name", d)).lower() for d in items]
    bad = [n for n in names if n not in ("minimize", "maximize")]
    if bad or not names:
        raise ValueError(f"direction must be minimize/maximize or a list of them, got {direction!r}.")
    return names


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        log.warning("No trial completed: there is no best trial.")
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value
