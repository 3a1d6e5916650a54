"""Per-trial random streams for Optuna samplers, so that sweeps sharing a study never share a stream.

A sampler built with `seed=S` draws every trial from one stream. Two sweep processes started
together with the same preset would draw the same proposals; re-seeding with `S + k` (what we
did) makes seeds that differ by k collide k trials apart. Instead, the sampler's random state is
re-seeded before each trial from (S, trial number): trial numbers are unique within a study, so
every trial has its own stream, whichever process asks it; and the same command on a fresh study
still proposes the same trials.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState  # every seeded Optuna sampler's RNG

log = logging.getLogger("hyrax")
_MAX_DEPTH = 3  # samplers keep their RNGs in their attributes or in a nested sampler's


def trial_seed(seed: int, number: int, stream: int = 0) -> int:
    """A 32-bit seed for trial `number` of a sampler seeded with `seed` (its `stream`-th RNG)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, number, stream]).generate_state(1)[0])


def seed_per_trial(sampler: BaseSampler, seed: int) -> bool:
    """Make `sampler` re-seed its random state from (`seed`, trial number) before each trial.

    Returns False (and changes nothing) for a sampler without random state of its own.
    """
    states = _random_states(sampler, _MAX_DEPTH, set())
    if not states:
        log.debug("%s has no random state to seed per trial", type(sampler).__name__)
        return False
    original = sampler.before_trial

    def before_trial(study: Any, trial: Any) -> None:
        for stream, state in enumerate(states):
            state.rng.seed(trial_seed(seed, trial.number, stream))
        original(study, trial)

    sampler.before_trial = before_trial  # type: ignore[method-assign]
    return True


def _random_states(obj: Any, depth: int, seen: set[int]) -> list[LazyRandomState]:
    """The `LazyRandomState`s held by `obj` and by the samplers and strategies it holds."""
    if id(obj) in seen or depth < 0:
        return []
    seen.add(id(obj))
    if isinstance(obj, LazyRandomState):
        return [obj]
    found: list[LazyRandomState] = []
    for value in getattr(obj, "__dict__", {}).values():
        if isinstance(value, LazyRandomState) or (
            hasattr(value, "__dict__") and type(value).__module__.startswith("optuna.")
        ):
            found.extend(_random_states(value, depth - 1, seen))
    return found
