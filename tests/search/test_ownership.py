"""Ownership of trials among sweep processes sharing one study, on real Optuna storages and trials.

Two sweep workers are two `Ownership`s (their own sweep dirs) with their own `Study` objects on one
journal file, as two processes would have. A trial's age is set through the `now` argument and the
`started` time, never by sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from hyrax.search.ownership import GRACE_S, OWNER_ATTR, Ownership
from hyrax.search.storage import open_storage

SECOND = timedelta(seconds=1)


@pytest.fixture
def journal(tmp_path: Path) -> str:
    return str(tmp_path / "shared.journal")


def _worker(journal: str) -> optuna.Study:
    """One worker's handle on the shared study (each sweep process opens its own)."""
    return optuna.create_study(study_name="shared", storage=open_storage(journal), load_if_exists=True)


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials() if t.number == number)


def test_a_claimed_trial_is_its_sweeps_at_any_age(journal: str, tmp_path: Path) -> None:
    a, b = Ownership(tmp_path / "worker_a"), Ownership(tmp_path / "worker_b")
    trial = _worker(journal).ask()
    b.claim(trial)
    seen = _frozen(_worker(journal), trial.number)
    assert seen.user_attrs[OWNER_ATTR] == b.owner == str(tmp_path / "worker_b")
    much_later = seen.datetime_start + timedelta(days=1)
    assert a.owner_of(seen, now=much_later) == b.owner
    assert a.runs_elsewhere(seen, now=much_later) and not a.may_declare_dead(seen, now=much_later)
    # B restarted after a crash (a new process, the same sweep dir) declares it dead.
    b_again = Ownership(tmp_path / "worker_b", started=much_later)
    assert b_again.is_ours(seen) and b_again.may_declare_dead(seen) and not b_again.runs_elsewhere(seen)


def test_an_unclaimed_trial_asked_after_we_started_is_left_to_its_sweep(journal: str, tmp_path: Path) -> None:
    # Worker B has asked a trial and not yet recorded itself on it when worker A looks.
    b_study = _worker(journal)
    other = b_study.ask()
    asked = _frozen(b_study, other.number).datetime_start
    a = Ownership(tmp_path / "worker_a", started=asked - SECOND)
    seen = _frozen(_worker(journal), other.number)
    assert a.owner_of(seen, now=asked + SECOND) is None
    assert a.runs_elsewhere(seen, now=asked + SECOND) and not a.may_declare_dead(seen, now=asked + SECOND)
    assert b_study.tell(other.number, 1.0).state == TrialState.COMPLETE  # and B finishes it


def test_an_unclaimed_trial_from_before_we_started_is_ours(journal: str, tmp_path: Path) -> None:
    # A sweep killed between asking a trial and recording itself, then run again at once.
    orphan = _worker(journal).ask()
    seen = _frozen(_worker(journal), orphan.number)
    a = Ownership(tmp_path / "worker_a", started=seen.datetime_start + SECOND)
    assert a.owner_of(seen, now=seen.datetime_start + 2 * SECOND) == a.owner
    assert a.may_declare_dead(seen) and not a.runs_elsewhere(seen)


def test_an_unclaimed_trial_past_the_grace_period_is_ours(journal: str, tmp_path: Path) -> None:
    # Another worker was killed in that moment while this sweep was already running.
    study = _worker(journal)
    seen = _frozen(study, study.ask().number)
    a = Ownership(tmp_path / "worker_a", started=seen.datetime_start - SECOND)
    within, past = (seen.datetime_start + timedelta(seconds=s) for s in (GRACE_S - 1, GRACE_S + 1))
    assert a.owner_of(seen, now=within) is None and a.runs_elsewhere(seen, now=within)
    assert a.owner_of(seen, now=past) == a.owner and a.may_declare_dead(seen, now=past)


def test_only_running_trials_are_declared_dead_or_counted_elsewhere(tmp_path: Path) -> None:
    study = optuna.create_study()  # in memory
    a, b = Ownership(tmp_path / "worker_a"), Ownership(tmp_path / "worker_b")
    for owner, state in ((a, TrialState.COMPLETE), (b, TrialState.FAIL), (b, TrialState.PRUNED)):
        trial = study.ask()
        owner.claim(trial)
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.enqueue_trial({"x": 0.5})
    trials = study.get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.WAITING,
    ]
    later = datetime.now() + timedelta(days=1)
    for trial in trials:
        assert not a.may_declare_dead(trial, now=later) and not a.runs_elsewhere(trial, now=later)
    assert [a.is_ours(t) for t in trials[:3]] == [True, False, False]


def test_the_owner_is_the_resolved_sweep_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative, absolute = Ownership("multiruns/w0"), Ownership(tmp_path / "multiruns" / "w0")
    assert relative.owner == absolute.owner == str(tmp_path / "multiruns" / "w0")
    study = optuna.create_study()
    trial = study.ask()
    relative.claim(trial)
    assert absolute.is_ours(study.trials[0])
