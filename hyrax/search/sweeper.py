"""The Optuna sweep loop behind `hydra/sweeper=optuna`: keep `n_jobs` trials running, tell results.

Behaviour beyond the released hydra-optuna-sweeper:

- **Asynchronous.** On launchers that run jobs concurrently (`pool`, `local`, `slurm`) each trial
  is its own launch: when one ends it is told and the next is asked at once (see
  `hyrax.search.slots`). Hydra's basic launcher runs one trial after the other.
- A bad sweep config (search space, sampler, pruner, direction, ...) is one `HyraxError` naming its
  key, raised before the sweep dir or the study exist (see `hyrax.search.checks`).
- Persistent by default: with `storage: null` the study lives in a journal file
  `<hydra.sweep.dir>/optuna.journal` and is always opened with `load_if_exists`.
  `n_trials` is the number of finished trials (complete, pruned or failed) the study should
  end with, so re-running the same command after a crash continues the study. Trials a dead
  sweep left RUNNING are told FAIL, not counted, and their parameters queued again. Several sweep
  processes may share one study; the rules that keep them from repeating a parameter set or
  overshooting `n_trials` are in `hyrax.search.asking`, the per-trial random streams in
  `hyrax.search.seeding`, which sweep owns a trial in `hyrax.search.ownership`.
- Budgets: `timeout`, `stop_when.value`, `stop_when.patience` (`hyrax.search.budget`).
- `pruner`: rebuilt in every job from the sweep's study file (see `hyrax.search.trial`).
  A job raising `optuna.TrialPruned` is told PRUNED with its last reported value.
- A job that raises, or returns None / NaN / a non-number, is told FAIL and the sweep goes on
  until more than `max_failure_rate * n_trials` trials of this run failed; then
  `FailureRateExceeded` stops it. A sweep whose trials all failed fails too.
- `enqueue_trials`: parameter dicts evaluated first (skipped if already in the study).
- The grid sampler stops the sweep when its grid is done, even if `n_trials` is larger.

Jobs get their parameters as overrides and nothing else in their config: they learn their trial
from two environment variables set for the job only (`hyrax.search.trial`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from hyrax.config import plain
from hyrax.errors import HyraxError
from hyrax.search import builders, storage
from hyrax.search.asking import CLAIM_WAIT_S, Asker, counted_finished, requeue, retry_orphans, tell
from hyrax.search.budget import Budget
from hyrax.search.checks import check_counts, check_sweep, load_custom_search_space, parse_directions
from hyrax.search.outcomes import job_outcome
from hyrax.search.ownership import Ownership
from hyrax.search.results import write_results
from hyrax.search.seeding import seed_per_trial
from hyrax.search.slots import Runner, runner_for
from hyrax.search.space import SearchSpace, format_value, parse_search_space
from hyrax.search.trial import job_environment, write_study_file

log = logging.getLogger("hyrax")

Callback = Callable[[optuna.Study, FrozenTrial], None]
INTERRUPTED = "interrupted (Ctrl-C)"


class FailureRateExceeded(RuntimeError):
    """More trials failed than `max_failure_rate` allows (or every trial of the sweep failed)."""


class OptunaSweep:
    """One Optuna study run as a Hydra sweep (follows Hydra's `Sweeper` protocol).

    `callbacks` are called as `cb(study, frozen_trial)` after each trial is told, like the
    callbacks of `Study.optimize`. Bad settings are a `HyraxError`.
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
        timeout: float | None = None,
        stop_when: Mapping[str, Any] | None = None,
        plots: bool = True,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        check_counts(n_trials, n_jobs, max_failure_rate)
        self.sampler_cfg = sampler
        self.directions = parse_directions(direction)
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.legacy_space = search_space
        self.custom_search_space = load_custom_search_space(custom_search_space)
        self.pruner_cfg = plain(pruner) or None
        self.enqueue_trials = [dict(plain(p)) for p in enqueue_trials or ()]
        self.timeout = timeout
        self.stop_when = dict(plain(stop_when) or {})
        self.plots = plots
        self.callbacks = list(callbacks)

        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.space = SearchSpace()
        self.storage_spec: storage.StorageSpec = ""
        self.study_file = Path()
        self.is_grid = False
        self.launched = 0
        self.told = 0
        self.trial_seconds = 0.0
        self.stopped: str | None = None
        self.failures: list[tuple[int, str, BaseException | None]] = []
        self.failure: FailureRateExceeded | None = None
        self.claim_wait_s = CLAIM_WAIT_S  # how long `resume` waits for other sweeps' claims

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep Hydra's context and build the launcher (Hydra calls this before `sweep`)."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        """Run trials until `n_trials` have finished in the study (or a budget ends); return the study.

        A bad sweep config is a `HyraxError` (see `check_sweep`) before the sweep dir, its
        `multirun.yaml` or the study exist.
        """
        assert self.config is not None and self.launcher is not None, "call setup() first"
        check_sweep(self.config.hydra.sweeper, arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        ownership = Ownership(sweep_dir)
        self.space = self.parse_space(arguments)
        study = self.open_study(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.study_file = write_study_file(sweep_dir, study.study_name, self.storage_spec, self.pruner_cfg)
        self.resume(study, ownership)
        budget = Budget(self.timeout, self.stop_when, self.directions[0])
        budget.seed_best(study.get_trials(deepcopy=False))
        began = time.monotonic()
        try:
            self.run_trials(study, ownership, budget)
        except BaseException as err:
            self.stopped = (
                INTERRUPTED if isinstance(err, KeyboardInterrupt) else self.stopped or f"error: {err}"
            )
            raise
        finally:
            summary = self.summary(time.monotonic() - began)
            write_results(study, sweep_dir, summary, self.plots, self.metric_name())
        return study

    def metric_name(self) -> str:
        """What the objective is called in plots: `train.objective.metric` (plain Hydra apps: objective)."""
        metric = OmegaConf.select(self.config, "train.objective.metric", default=None) or "objective"
        return metric if isinstance(metric, str) else ", ".join(str(m) for m in metric)

    def run_trials(self, study: optuna.Study, ownership: Ownership, budget: Budget) -> None:
        """Keep up to `n_jobs` trials running until the study is done or a budget ends."""
        asker = Asker(
            self.space,
            ownership,
            self.n_trials,
            self.custom_search_space,
            self.config,
            dedupe=not self.is_grid,
        )
        runner = runner_for(self.launcher, self.n_jobs)
        running: dict[int, Trial] = {}
        try:
            while True:
                self._fill(study, ownership, asker, runner, running)
                if not running:
                    break
                for done in runner.wait():
                    frozen = self.tell(study, running.pop(done.number), done.job_return)
                    self.trial_seconds += done.seconds
                    budget.told(frozen)
                self.stopped = self.stopped or budget.stop_reason() or self.failure_rate_reason()
        except KeyboardInterrupt:
            runner.interrupt()
            for trial in running.values():
                requeue(study, trial, f"{INTERRUPTED}; its parameters run again when the sweep resumes")
            raise
        if self.failure is not None:
            raise self.failure
        self.check_some_succeeded()

    def _fill(
        self,
        study: optuna.Study,
        ownership: Ownership,
        asker: Asker,
        runner: Runner,
        running: dict[int, Trial],
    ) -> None:
        """Ask and start trials while a slot is free, the budget lasts and the study wants more."""
        while self.stopped is None and len(running) < runner.capacity:
            if self.room(study, ownership, len(running)) <= 0:
                return
            trial = asker.ask(study)
            if trial is None:
                return
            running[trial.number] = trial
            self.launched += 1
            runner.start(trial.number, self.job_overrides(trial))

    def parse_space(self, arguments: Sequence[str]) -> SearchSpace:
        """The search space from `params` (or legacy `search_space`) and command-line sweeps."""
        legacy = self.legacy_space
        if legacy is not None and self.params is not None:
            warnings.warn(
                "Both hydra.sweeper.params and hydra.sweeper.search_space are configured: "
                "the search space is taken from hydra.sweeper.params alone",
                category=UserWarning,
                stacklevel=2,
            )
            legacy = None
        elif legacy is not None:
            warnings.warn(
                "`hydra.sweeper.search_space` is deprecated and will be removed in a future release: "
                "write the search space as `hydra.sweeper.params` instead",
                category=UserWarning,
                stacklevel=2,
            )
        loader = self.hydra_context.config_loader if self.hydra_context else None
        parser = OverridesParser.create(config_loader=loader)
        return parse_search_space(self.params, arguments, parser=parser, legacy=legacy)

    def open_study(self, sweep_dir: Path) -> optuna.Study:
        """Create or load the study; its sampler draws each trial from a stream of its own."""
        assert self.config is not None
        self.storage_spec = storage.resolve_storage(self.storage, sweep_dir)
        name = self.study_name or str(self.config.hydra.job.name)
        self.study_name = name
        self.is_grid = builders.is_grid_sampler(self.sampler_cfg)
        grid = self.space.grid_search_space() if self.is_grid else None
        sampler = builders.build_sampler(self.sampler_cfg, grid=grid)
        seed = plain(self.sampler_cfg).get("seed")
        if seed is not None and not self.is_grid:  # the grid's seed fixes the order of its points
            seed_per_trial(sampler, int(seed))
        study = optuna.create_study(
            study_name=name,
            storage=storage.open_storage(self.storage_spec),
            sampler=sampler,
            pruner=builders.build_pruner(self.pruner_cfg),
            directions=self.directions,
            load_if_exists=True,
        )
        self._check_directions(study)
        n_existing = len(study.get_trials(deepcopy=False))
        log.info("Study name: %s", name)
        log.info("Storage: %s", storage.describe(self.storage_spec))
        log.info("Sampler: %s", type(study.sampler).__name__)
        log.info("Pruner: %s", type(study.pruner).__name__)
        log.info("Directions: %s", self.directions)
        if n_existing:
            log.info("Resuming: the study already has %d trials", n_existing)
        return study

    def _check_directions(self, study: optuna.Study) -> None:
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            written = found[0] if len(found) == 1 else f"[{','.join(found)}]"
            raise HyraxError(
                f"the study '{study.study_name}' in {storage.describe(self.storage_spec)} exists with "
                f"directions {found}, not {self.directions}",
                key="hydra.sweeper.direction",
                fix=f"write hydra.sweeper.direction={written} to continue it, "
                "or pick another hydra.sweeper.study_name",
            )

    def resume(self, study: optuna.Study, ownership: Ownership) -> None:
        """Fail (not counted) and re-queue the trials a dead run of this sweep left RUNNING; queue
        `enqueue_trials`. Sweep processes sharing a study leave each other's trials alone."""
        for frozen in retry_orphans(study, ownership, self.claim_wait_s):
            for callback in self.callbacks:
                callback(study, frozen)
        for params in self.enqueue_trials:
            study.enqueue_trial(params, skip_if_exists=True)

    def room(self, study: optuna.Study, ownership: Ownership, running_here: int) -> int:
        """How many more trials may start now; 0 when the sweep is done (and why, in `stopped`).

        Trials other sweep processes are running on the same study count as on their way to
        finishing, so that workers sharing a study do not overshoot `n_trials` together.
        """
        trials = study.get_trials(deepcopy=False)
        finished = counted_finished(trials)
        elsewhere = sum(ownership.runs_elsewhere(t) for t in trials)
        size = self.n_trials - finished - elsewhere - running_here
        if self.is_grid and size > 0:
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if study.sampler.is_exhausted(study) and not waiting:
                if not running_here:
                    self.stopped = f"the grid is done after {finished} finished trials"
                return 0
            size = min(size, self._grid_points_left(trials) + waiting)
        if size <= 0 and not running_here:
            self.stopped = f"the study has n_trials={self.n_trials} finished trials"
        return max(size, 0)

    def job_overrides(self, trial: Trial) -> list[str]:
        """The overrides of the job that runs `trial`: its parameters, and its trial identity as
        environment variables of the job (Hydra overrides, not task overrides: the app's config and
        `hydra.job.override_dirname` do not see them)."""
        overrides = [f"{name}={format_value(value)}" for name, value in trial.params.items()]
        overrides.extend(self.space.fixed.values())
        for name, value in job_environment(self.study_file, trial.number).items():
            overrides.append(f"++hydra.job.env_set.{name}={format_value(value)}")
        return overrides

    def tell(self, study: optuna.Study, trial: Trial, job_return: JobReturn) -> FrozenTrial:
        """Tell the outcome of a job: COMPLETE, PRUNED, or FAIL (recorded for the failure rate)."""
        state, values, error = job_outcome(job_return, len(self.directions))
        frozen = tell(study, trial.number, values, state)
        self.told += 1
        log.info("Trial %d %s: values=%s params=%s", trial.number, state.name, frozen.values, frozen.params)
        if state == TrialState.FAIL:
            exc = job_return._return_value if isinstance(job_return._return_value, BaseException) else None
            self.failures.append((trial.number, error or "unknown error", exc))
            from hyrax.report import as_user_error  # bad input needs its message, not a traceback

            crash = exc if exc is not None and as_user_error(exc) is None else None
            log.warning("Trial %d failed: %s", trial.number, error, exc_info=crash)
        for callback in self.callbacks:
            callback(study, frozen)
        return frozen

    def failure_rate_reason(self) -> str | None:
        """Once failures pass `max_failure_rate * n_trials`: why the sweep stops (no new trials)."""
        allowed = self.max_failure_rate * self.n_trials
        if len(self.failures) <= allowed + 1e-9:
            return None
        number, error, cause = self.failures[0]
        self.failure = FailureRateExceeded(
            f"{len(self.failures)} of {self.launched} trials failed in this sweep, more than "
            f"max_failure_rate={self.max_failure_rate} of n_trials={self.n_trials} allows "
            f"({math.floor(allowed + 1e-9)}). First error (trial {number}): {error}"
        )
        self.failure.__cause__ = cause
        return f"{len(self.failures)} trials failed (max_failure_rate={self.max_failure_rate})"

    def check_some_succeeded(self) -> None:
        """Raise `FailureRateExceeded` when every trial this sweep ran failed."""
        if self.told and len(self.failures) == self.told:
            number, error, cause = self.failures[0]
            self.stopped = f"all {self.told} trials failed"
            first = repr(cause) if cause is not None else error
            raise FailureRateExceeded(  # each failure and its traceback is in the log above
                f"all {self.told} trials of this sweep failed; the first, trial {number}, ended with {first}"
            )

    def summary(self, wall_seconds: float) -> dict[str, Any]:
        """Why the sweep stopped and the compute it used, for its results and its MLflow parent run."""
        return {
            "stopped_because": self.stopped or "unknown",
            "trials_run": self.told,
            "trial_seconds": round(self.trial_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
        }

    def _grid_points_left(self, trials: Sequence[FrozenTrial]) -> int:
        total = math.prod(len(v) for v in self.space.grid_search_space().values())
        used = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
        return max(total - len(used), 0)
