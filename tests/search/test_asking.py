"""Which trials a sweep asks, on a real journal study: per-trial random streams, no repeats, exactly
`n_trials`, and the budgets that stop a sweep."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from hyrax.search.asking import NOT_COUNTED_ATTR, Asker, counted_finished, is_counted, retry_orphans
from hyrax.search.budget import Budget
from hyrax.search.builders import build_sampler
from hyrax.search.ownership import Ownership
from hyrax.search.seeding import seed_per_trial
from hyrax.search.space import SearchSpace
from hyrax.search.storage import open_storage

CONTINUOUS = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}
SMALL = {"a": CategoricalDistribution([1, 2, 3]), "b": CategoricalDistribution(["x", "y"])}


def _study(where: Path, sampler_name: str = "RandomSampler", seed: int | None = 0) -> optuna.Study:
    """A handle on the shared journal study, as one sweep process would open it."""
    sampler = build_sampler({"_target_": f"optuna.samplers.{sampler_name}", "seed": seed})
    if seed is not None:
        seed_per_trial(sampler, seed)
    return optuna.create_study(
        study_name="s", storage=open_storage(str(where / "s.journal")), sampler=sampler, load_if_exists=True
    )


def _asker(where: Path, worker: str, space: dict, n_trials: int = 100) -> Asker:
    return Asker(SearchSpace(dict(space)), Ownership(where / worker), n_trials=n_trials)


@pytest.mark.parametrize("sampler", ["RandomSampler", "TPESampler"])
def test_processes_with_the_same_seed_draw_their_own_streams(tmp_path: Path, sampler: str) -> None:
    # Two sweep processes started together with the same preset (same seed) take turns asking.
    first, second = _study(tmp_path, sampler), _study(tmp_path, sampler)
    a, b = _asker(tmp_path, "a", CONTINUOUS), _asker(tmp_path, "b", CONTINUOUS)
    proposals = []
    for _ in range(10):
        for study, asker in ((first, a), (second, b)):
            trial = asker.ask(study)
            proposals.append(trial.params["lr"])
            study.tell(trial, trial.params["lr"])
    assert len(set(proposals)) == 20, proposals  # with a shared stream, pairs would repeat


def test_the_same_seed_on_a_fresh_study_proposes_the_same_trials(tmp_path: Path) -> None:
    def proposals(where: Path, seed: int) -> list[float]:
        study, asker = _study(where, seed=seed), _asker(where, "a", CONTINUOUS)
        return [asker.ask(study).params["lr"] for _ in range(5)]

    assert proposals(tmp_path / "one", 7) == proposals(tmp_path / "two", 7)
    assert proposals(tmp_path / "three", 7) != proposals(tmp_path / "four", 8)


def test_seeds_that_differ_by_k_do_not_collide_k_trials_apart(tmp_path: Path) -> None:
    # The old scheme seeded with seed + trials in the study: seed 0 at trial 1 drew what seed 1 drew at 0.
    zero = [
        _asker(tmp_path / "z", "a", CONTINUOUS).ask(_study(tmp_path / "z", seed=0)).params["lr"] for _ in "ab"
    ]
    one = _asker(tmp_path / "o", "a", CONTINUOUS).ask(_study(tmp_path / "o", seed=1)).params["lr"]
    assert one not in zero


def test_a_repeated_parameter_set_is_asked_again_until_the_space_is_exhausted(tmp_path: Path) -> None:
    study, asker = _study(tmp_path, seed=3), _asker(tmp_path, "a", SMALL)
    seen = []
    for _ in range(6):  # the space has 6 points: each must come exactly once
        trial = asker.ask(study)
        seen.append(tuple(sorted(trial.params.items())))
        study.tell(trial, 1.0)
    assert len(set(seen)) == 6, seen
    repeats = [t for t in study.trials if not is_counted(t)]
    assert all(
        t.state == TrialState.FAIL and "repeat of trial" in t.user_attrs[NOT_COUNTED_ATTR] for t in repeats
    )
    assert counted_finished(study.trials) == 6
    seventh = asker.ask(study)  # exhausted: a repeat is all there is, and it runs
    assert seventh is not None and is_counted(study.trials[seventh.number])


def test_a_repeat_of_a_running_trial_in_another_process_is_refused(tmp_path: Path) -> None:
    single = {"a": CategoricalDistribution([1, 2])}
    running = _asker(tmp_path, "a", single).ask(_study(tmp_path, seed=1))  # process a: still running
    other = _asker(tmp_path, "b", single).ask(_study(tmp_path, seed=1))
    assert other.params != running.params


def test_asks_beyond_n_trials_are_not_run(tmp_path: Path) -> None:
    # Three processes ask at once with one trial of the budget left: only the first of them may run.
    studies = [_study(tmp_path, seed=s) for s in range(3)]
    askers = [_asker(tmp_path, w, CONTINUOUS, n_trials=3) for w in "abc"]
    for _ in range(2):
        trial = askers[0].ask(studies[0])
        studies[0].tell(trial, 1.0)
    got = [asker.ask(study) for asker, study in zip(askers, studies, strict=True)]
    assert got[0] is not None and got[1:] == [None, None]
    beyond = [t for t in studies[0].trials if not is_counted(t)]
    assert len(beyond) == 2 and {t.user_attrs[NOT_COUNTED_ATTR] for t in beyond} == {
        "asked beyond n_trials=3"
    }


def _trial(study: optuna.Study, value: float | None, state: TrialState = TrialState.COMPLETE):
    trial = study.ask(CONTINUOUS)
    return study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


def test_stop_when_value_stops_once_the_objective_reaches_it(tmp_path: Path) -> None:
    study, budget = _study(tmp_path), Budget(None, {"value": 0.1}, "minimize")
    budget.told(_trial(study, 0.5))
    assert budget.stop_reason() is None
    budget.told(_trial(study, 0.05))
    assert budget.stop_reason() == "the objective reached 0.05 (stop_when.value=0.1)"


def test_stop_when_value_maximizing_and_from_a_resumed_study(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _trial(study, 0.95)
    budget = Budget(None, {"value": 0.9}, "maximize")
    budget.seed_best(study.trials)
    assert budget.stop_reason() == "the study's best objective 0.95 reached stop_when.value=0.9"


def test_stop_when_patience_counts_trials_without_improvement(tmp_path: Path) -> None:
    study, budget = _study(tmp_path), Budget(None, {"patience": 3}, "minimize")
    for value in (1.0, 0.5, 0.7):
        budget.told(_trial(study, value))
    budget.told(_trial(study, None, TrialState.FAIL))  # a failure improves nothing either
    assert budget.stop_reason() is None  # 2 in a row without improvement
    budget.told(_trial(study, 0.6))
    assert budget.stop_reason() == "no improvement in 3 trials (stop_when.patience=3)"


def test_timeout_stops_new_trials_after_its_seconds() -> None:
    budget = Budget(30.0, None, "minimize", start=100.0)
    assert budget.stop_reason(now=129.0) is None
    assert budget.stop_reason(now=130.5) == "timeout after 30 s (timeout=30 s)"


def test_a_restarting_sweep_waits_for_the_claim_of_a_trial_asked_just_before_it_started(
    tmp_path: Path,
) -> None:
    # Sweeps started together: b asked a trial (its claim follows a moment later) just before a
    # started. a must not take that trial for its own dead run's orphan.
    study = _study(tmp_path)
    asked = study.ask(CONTINUOUS)
    a = Ownership(tmp_path / "a")  # started after the ask: an unclaimed trial from before looks like ours
    claim = threading.Timer(0.5, Ownership(tmp_path / "b").claim, args=(asked,))
    claim.start()
    told = retry_orphans(_study(tmp_path), a, claim_wait_s=5.0)
    claim.join()
    assert told == [] and study.trials[asked.number].state == TrialState.RUNNING
    # Never claimed (its sweep died between asking and claiming): after the wait it is an orphan.
    orphan = study.ask(CONTINUOUS)
    told = retry_orphans(_study(tmp_path), Ownership(tmp_path / "a"), claim_wait_s=0.3)
    assert [t.number for t in told] == [orphan.number] and not is_counted(study.trials[orphan.number])
