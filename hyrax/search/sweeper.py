"""The Optuna sweep loop behind `hydra/sweeper=optuna`: ask a batch, launch it, tell results.

Behaviour beyond the released hydra-optuna-sweeper:

- A bad sweep config (search space, sampler, pruner, direction, ...) is one `HyraxError` naming its
  key, raised before the sweep dir or the study exist (see `hyrax.search.checks`).
- Persistent by default: with `storage: null` the study lives in a journal file
  `<hydra.sweep.dir>/optuna.journal` and is always opened with `load_if_exists`.
  `n_trials` is the number of FINISHED trials (complete, pruned or failed) the study should
  end with, so re-running the same command after a crash continues the study. The default
  `hydra.sweep.dir` contains a timestamp: to resume, re-run with the same
  `hydra.sweep.dir=...` (or a fixed `storage`/`study_name`). Trials a dead sweep left
  RUNNING are told FAIL at start and their parameters queued again. Several sweep processes
  may share one study (same `study_name` and `storage`, their own sweep dirs): each trial
  records the sweep dir that asked it, and only that sweep declares it dead (see
  `hyrax.search.ownership`).
- `pruner`: rebuilt in every job from `trial.pruner` (see `hyrax.search.trial`).
  A job raising `optuna.TrialPruned` is told PRUNED with its last reported value.
- A job that raises, or returns None / NaN / a non-number, is told FAIL and the sweep goes on
  until more than `max_failure_rate * n_trials` trials of this run failed; then
  `FailureRateExceeded` stops it.
- `enqueue_trials`: parameter dicts evaluated first (skipped if already in the study).
- The grid sampler stops the sweep when its grid is done, even if `n_trials` is larger.

Every job gets, on top of its parameters, the overrides `++trial.study_name=...`,
`++trial.storage=...`, `++trial.number=N` and `++trial.pruner=<config or null>`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from hyrax.config import plain
from hyrax.errors import HyraxError
from hyrax.search import builders, storage
from hyrax.search.checks import check_counts, check_sweep, load_custom_search_space, parse_directions
from hyrax.search.outcomes import job_outcome
from hyrax.search.ownership import Ownership
from hyrax.search.results import write_results
from hyrax.search.space import SearchSpace, format_value, parse_search_space

log = logging.getLogger("hyrax")

Callback = Callable[[optuna.Study, FrozenTrial], None]
RETRY_ATTR = "hyrax_retry_of"


class FailureRateExceeded(RuntimeError):
    """More trials failed than `max_failure_rate` allows."""


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
        self.callbacks = list(callbacks)

        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.space = SearchSpace()
        self.storage_spec: storage.StorageSpec = ""
        self.is_grid = False
        self.launched = 0
        self.failures: list[tuple[int, str, BaseException | None]] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep Hydra's context and build the launcher (Hydra calls this before `sweep`)."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> optuna.Study:
        """Run trials until `n_trials` have finished in the study; return the study.

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
        self.resume(study, ownership)
        while (size := self.next_batch_size(study, ownership)) > 0:
            trials = [self.ask(study, ownership) for _ in range(size)]
            returns = self.launch(trials)
            for trial, job_return in zip(trials, returns, strict=True):
                self.tell(study, trial, job_return)
            self.check_failure_rate()
        write_results(study, sweep_dir)
        return study

    def parse_space(self, arguments: Sequence[str]) -> SearchSpace:
        """The search space from `params` (or legacy `search_space`) and command-line sweeps."""
        legacy = self.legacy_space
        if legacy and self.params is not None:
            log.warning("Both hydra.sweeper.params and hydra.sweeper.search_space are set; using params.")
            legacy = None
        loader = self.hydra_context.config_loader if self.hydra_context else None
        parser = OverridesParser.create(config_loader=loader)
        return parse_search_space(self.params, arguments, parser=parser, legacy=legacy)

    def open_study(self, sweep_dir: Path) -> optuna.Study:
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
        self._check_directions(study)
        self.is_grid = builders.is_grid_sampler(self.sampler_cfg)
        grid = self.space.grid_search_space() if self.is_grid else None
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler = builders.build_sampler(self.sampler_cfg, grid=grid, seed_offset=n_existing)
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
        """Fail and re-queue the trials a dead run of this sweep left RUNNING; queue `enqueue_trials`.

        Sweep processes that share a study leave each other's running trials alone (see `Ownership`).
        """
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
        for trial in trials:
            if not ownership.may_declare_dead(trial):
                continue
            if trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})
            frozen = self._tell(study, trial.number, None, TrialState.FAIL)
            log.warning(
                "Trial %d was left running by an earlier sweep: told FAIL, queued again", trial.number
            )
            for callback in self.callbacks:
                callback(study, frozen)
        for params in self.enqueue_trials:
            study.enqueue_trial(params, skip_if_exists=True)

    def next_batch_size(self, study: optuna.Study, ownership: Ownership) -> int:
        """How many trials to launch next: up to `n_jobs`, 0 when the sweep is done.

        Trials other sweep processes are running on the same study count as on their way to
        finishing, so that workers sharing a study do not overshoot `n_trials` together.
        """
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state.is_finished() for t in trials)
        elsewhere = sum(ownership.runs_elsewhere(t) for t in trials)
        size = min(self.n_jobs, self.n_trials - finished - elsewhere)
        if self.is_grid and size > 0:
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if study.sampler.is_exhausted(study) and not waiting:
                log.info("The grid is exhausted after %d finished trials", finished)
                return 0
            size = min(size, self._grid_points_left(trials) + waiting)
        return max(size, 0)

    def ask(self, study: optuna.Study, ownership: Ownership) -> Trial:
        """Ask a trial, claim it, and suggest all its parameters (`params`, then `custom_search_space`)."""
        trial = study.ask(fixed_distributions=dict(self.space.distributions))
        try:
            ownership.claim(trial)
            if self.custom_search_space is not None:
                self.custom_search_space(self.config, trial)
            for key, line in self.space.fixed.items():
                trial.set_user_attr(key, line.split("=", 1)[1] if "=" in line else None)
            overlap = sorted(set(trial.params) & set(self.space.fixed))
            if overlap:
                raise HyraxError(
                    f"custom_search_space suggests {', '.join(overlap)}, which also has a fixed value",
                    key="hydra.sweeper.custom_search_space",
                    fix=f"drop the fixed value of {', '.join(overlap)}, or do not suggest it",
                )
        except BaseException:
            self._tell(study, trial.number, None, TrialState.FAIL)
            raise
        return trial

    def job_overrides(self, trial: Trial) -> list[str]:
        """The overrides of the job that runs `trial`."""
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
            log.error("The launcher failed for trials %s: %r", [t.number for t in trials], err)
            return [JobReturn(overrides=o, status=JobStatus.FAILED, _return_value=err) for o in batch]
        if len(returns) != len(batch):
            raise RuntimeError(f"The launcher returned {len(returns)} results for {len(batch)} jobs.")
        return returns

    def tell(self, study: optuna.Study, trial: Trial, job_return: JobReturn) -> None:
        """Tell the outcome of a job: COMPLETE, PRUNED, or FAIL (recorded for the failure rate)."""
        state, values, error = job_outcome(job_return, len(self.directions))
        frozen = self._tell(study, trial.number, values, state)
        log.info("Trial %d %s: values=%s params=%s", trial.number, state.name, frozen.values, frozen.params)
        if state == TrialState.FAIL:
            exc = job_return._return_value if isinstance(job_return._return_value, BaseException) else None
            self.failures.append((trial.number, error or "unknown error", exc))
            from hyrax.report import as_user_error  # bad input needs its message, not a traceback

            crash = exc if exc is not None and as_user_error(exc) is None else None
            log.warning("Trial %d failed: %s", trial.number, error, exc_info=crash)
        for callback in self.callbacks:
            callback(study, frozen)

    def check_failure_rate(self) -> None:
        """Raise `FailureRateExceeded` once failures pass `max_failure_rate * n_trials`."""
        allowed = self.max_failure_rate * self.n_trials
        if len(self.failures) <= allowed + 1e-9:
            return
        number, error, cause = self.failures[0]
        raise FailureRateExceeded(
            f"{len(self.failures)} of {self.launched} trials failed in this sweep, more than "
            f"max_failure_rate={self.max_failure_rate} of n_trials={self.n_trials} allows "
            f"({math.floor(allowed + 1e-9)}). First error (trial {number}): {error}"
        ) from cause

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
            log.warning(
                "Trial %d was already %s: its %s is not stored", number, frozen.state.name, state.name
            )
        return frozen
