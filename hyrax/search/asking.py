"""Which trials a sweep runs: asking new ones (never a repeat, never past `n_trials`) and counting.

A study may be shared by several sweep processes, each asking while the others' trials run, so
every rule here works from what the storage says, ordered by trial number:

- **Counted trials.** `n_trials` counts the study's finished trials (complete, pruned, or failed
  by the user's code). Trials asked but never run are told FAIL with `NOT_COUNTED_ATTR` saying why,
  and do not count: a repeat of another trial's parameters, one asked beyond `n_trials`, and a trial
  a dead sweep left running (its parameters run again as a new trial).
- **Exactly `n_trials`.** A freshly asked trial with `n_trials` counted trials before it (finished
  or running, in any process) is beyond the budget: it is not run. So sweeps asking at the same
  instant cannot overshoot.
- **No repeats.** A trial the sampler proposed (not one from the queue: `enqueue_trials` and
  retries are run as asked) whose parameters equal those of a lower-numbered counted trial is asked
  again (up to `MAX_ASKS` times) unless the space is finite and every point has been tried. A
  sampler sure of its optimum (TPE on a small grid) proposes the same point again and again, so the
  second ask onwards takes a point nobody tried: drawn from the points left of a finite space, or
  by a random sampler in a continuous one.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from hyrax.errors import HyraxError
from hyrax.search.ownership import OWNER_ATTR, Ownership
from hyrax.search.seeding import trial_seed
from hyrax.search.space import SearchSpace

log = logging.getLogger("hyrax")

NOT_COUNTED_ATTR = "hyrax_not_counted"
RETRY_ATTR = "hyrax_retry_of"
MAX_ASKS = 20
CLAIM_WAIT_S = 10.0  # a sweep claims the trial it asked within this time, unless it died meanwhile
MAX_ENUMERATED = 100_000  # a finite space larger than this is treated as continuous


def is_counted(trial: FrozenTrial) -> bool:
    """Whether `trial` counts towards `n_trials` (it ran, runs, or failed in the user's code)."""
    return NOT_COUNTED_ATTR not in trial.user_attrs


def counted_finished(trials: Sequence[FrozenTrial]) -> int:
    """How many finished trials count towards `n_trials`."""
    return sum(t.state.is_finished() and is_counted(t) for t in trials)


def tell(study: optuna.Study, number: int, values: list[float] | None, state: TrialState) -> FrozenTrial:
    """Tell trial `number`'s outcome; if another process finished it first, the study keeps its verdict."""
    try:
        frozen = study.tell(number, values, state=state, skip_if_finished=True)
    except RuntimeError:
        # GridSampler calls study.stop() (a RuntimeError outside optimize) in the tell that
        # finishes the grid; the trial is stored before that.
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        if not frozen.state.is_finished():
            raise
    if frozen.state != state:
        log.warning("Trial %d was already %s: its %s is not stored", number, frozen.state.name, state.name)
    return frozen


def mark_not_counted(study: optuna.Study, trial: FrozenTrial | Trial, why: str) -> FrozenTrial:
    """Record why `trial` does not count, and tell it FAIL (nothing is stored if it finished already)."""
    optuna.trial.Trial(study, trial._trial_id).set_user_attr(NOT_COUNTED_ATTR, why)
    return tell(study, trial.number, None, TrialState.FAIL)


class Asker:
    """Asks the trials of one sweep process and suggests their parameters."""

    def __init__(
        self,
        space: SearchSpace,
        ownership: Ownership,
        n_trials: int,
        custom_search_space: Callable[[Any, Trial], None] | None = None,
        config: Any = None,
        dedupe: bool = True,
    ) -> None:
        self.space = space
        self.ownership = ownership
        self.n_trials = n_trials
        self.custom_search_space = custom_search_space
        self.config = config
        self.dedupe = dedupe
        self.random_seed: int | None = None  # the next ask's, by a random sampler, after a repeat

    def ask(self, study: optuna.Study) -> Trial | None:
        """A new trial to run, or None when the study already has `n_trials` counted trials."""
        for attempt in range(1, MAX_ASKS + 1):
            try:
                trial = self._ask_one(study)
            except optuna.exceptions.UpdateFinishedTrialError as err:  # another sweep judged it dead
                log.warning("A trial was finished by another sweep while it was being asked (%s)", err)
                continue
            trials = study.get_trials(deepcopy=False)
            if self._counted_before(trial.number, trials) >= self.n_trials:
                mark_not_counted(study, trial, f"asked beyond n_trials={self.n_trials}")
                return None
            repeat = (
                self._repeat_of(trial, trials) if self.dedupe and not _was_queued(trial, trials) else None
            )
            if repeat is None:
                return trial
            if attempt == MAX_ASKS or _space_exhausted(trial, trials):
                log.warning(
                    "Trial %d repeats the parameters of trial %d: nothing new is left", trial.number, repeat
                )
                return trial
            log.debug("Trial %d repeated trial %d's parameters: asking again", trial.number, repeat)
            mark_not_counted(study, trial, f"a repeat of trial {repeat}'s parameters, never run")
            self.random_seed = _queue_an_untried_point(study, trial, trials)
        raise AssertionError("unreachable")

    def _ask_one(self, study: optuna.Study) -> Trial:
        """Ask, claim, and suggest all parameters (`params`, then `custom_search_space`)."""
        sampler = study.sampler
        if self.random_seed is not None:
            study.sampler = optuna.samplers.RandomSampler(seed=self.random_seed)
        try:
            trial = study.ask(fixed_distributions=dict(self.space.distributions))
        finally:
            study.sampler, self.random_seed = sampler, None
        try:
            self.ownership.claim(trial)
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
            tell(study, trial.number, None, TrialState.FAIL)
            raise
        return trial

    @staticmethod
    def _counted_before(number: int, trials: Sequence[FrozenTrial]) -> int:
        return sum(
            t.number < number and is_counted(t) and (t.state.is_finished() or t.state == TrialState.RUNNING)
            for t in trials
        )

    @staticmethod
    def _repeat_of(trial: Trial, trials: Sequence[FrozenTrial]) -> int | None:
        """The lowest-numbered counted trial with the same parameters (a user's failure may be retried)."""
        params = trial.params
        for other in trials:
            if (
                other.number != trial.number
                and is_counted(other)
                and other.state != TrialState.FAIL
                and other.params == params
                and (other.number < trial.number or other.state.is_finished())
            ):
                return other.number
        return None


def _queue_an_untried_point(study: optuna.Study, repeat: Trial, trials: Sequence[FrozenTrial]) -> int | None:
    """Make the next ask propose parameters no counted trial has: queue an untried point of a finite
    space; for a continuous one, the seed of the random sampler that should make the next ask."""
    seed = trial_seed(repeat.number, repeat.number, 1)
    points = _all_points(repeat.distributions)
    if points is None:
        return seed
    taken = {tuple(sorted(t.params.items())) for t in trials if is_counted(t) and t.state != TrialState.FAIL}
    names = sorted(repeat.distributions)
    untried = [p for p in points if tuple(sorted(zip(names, p, strict=True))) not in taken]
    if untried:
        choice = untried[np.random.default_rng(seed).integers(len(untried))]
        study.enqueue_trial(dict(zip(names, choice, strict=True)))
    return None


def _all_points(distributions: dict[str, Any]) -> list[tuple[Any, ...]] | None:
    """Every point of a finite space (names sorted), or None if it is continuous or too large."""
    values = []
    for name in sorted(distributions):
        dist = distributions[name]
        if _points(dist) is None or _points(dist) > MAX_ENUMERATED:
            return None
        if isinstance(dist, CategoricalDistribution):
            values.append(list(dist.choices))
        elif isinstance(dist, IntDistribution):
            values.append(list(range(dist.low, dist.high + 1, 1 if dist.log else dist.step)))
        else:
            values.append([dist.low + k * dist.step for k in range(_points(dist) or 0)])
    if math.prod(len(v) for v in values) > MAX_ENUMERATED:
        return None
    return list(itertools.product(*values))


def _was_queued(trial: Trial, trials: Sequence[FrozenTrial]) -> bool:
    """Whether `trial` came from the queue (`enqueue_trials`, a retry): its parameters were chosen."""
    frozen = next((t for t in trials if t.number == trial.number), None)
    return frozen is not None and "fixed_params" in frozen.system_attrs


def _space_exhausted(trial: Trial, trials: Sequence[FrozenTrial]) -> bool:
    """Whether every point of `trial`'s (finite) search space is taken by a counted trial."""
    size = 1
    for dist in trial.distributions.values():
        points = _points(dist)
        if points is None:
            return False
        size *= points
    taken = {
        tuple(sorted(t.params.items()))
        for t in trials
        if is_counted(t) and t.state != TrialState.FAIL and t.number != trial.number
    }
    return len(taken) >= size


def _points(dist: Any) -> int | None:
    """How many values a distribution has, or None if it is continuous."""
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    if isinstance(dist, IntDistribution):
        return (dist.high - dist.low) // dist.step + 1 if not dist.log else dist.high - dist.low + 1
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
    return None


def requeue(
    study: optuna.Study, trial: FrozenTrial | Trial, why: str, queued: set[Any] | None = None
) -> FrozenTrial:
    """Queue `trial`'s parameters to run again as a new trial; tell it FAIL, not counted."""
    if queued is None or trial.number not in queued:
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})
    return mark_not_counted(study, trial, why)


def _claims_settled(study: optuna.Study, wait_s: float) -> list[FrozenTrial]:
    """The study's trials, once every running trial has an owner or `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        trials = study.get_trials(deepcopy=False)
        unclaimed = [t for t in trials if t.state == TrialState.RUNNING and OWNER_ATTR not in t.user_attrs]
        if not unclaimed or time.monotonic() >= deadline:
            return trials
        time.sleep(0.2)


def retry_orphans(
    study: optuna.Study, ownership: Ownership, claim_wait_s: float = CLAIM_WAIT_S
) -> list[FrozenTrial]:
    """Tell FAIL (not counted) the trials a dead run of this sweep left RUNNING; queue their parameters.

    Sweep processes that share a study leave each other's running trials alone (see `Ownership`).
    A trial another sweep has just asked is claimed a moment later: before judging unclaimed running
    trials, wait up to `claim_wait_s` for their claims (sweeps started together ask while we start).
    Returns the trials told.
    """
    trials = _claims_settled(study, claim_wait_s)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    told = []
    for trial in trials:
        if not ownership.may_declare_dead(trial):
            continue
        told.append(
            requeue(study, trial, "left running by a sweep that died; its parameters run again", retried)
        )
        log.warning("Trial %d was left running by an earlier sweep: told FAIL, queued again", trial.number)
    return told
