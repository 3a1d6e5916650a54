"""Which MLflow store a run uses (command line > environment > default), and secrets kept out of logs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from hyraxtest import free_port, hyrax_env, mlflow_runs, ok, run_hyrax, user_error

from hyrax.errors import HyraxError
from hyrax.redact import install_log_redaction, redact
from hyrax.tracking import reach_server, tracking_uri


def test_the_configured_uri_wins_over_the_environment_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking_uri(None, tmp_path) == "sqlite:///env.db"
    assert tracking_uri("sqlite:///cli.db", tmp_path) == "sqlite:///cli.db"


def test_help_states_the_order() -> None:
    from hyrax.help import help_text

    text = " ".join(help_text().split())
    order = "mlflow.tracking_uri when set (command line or config file), else $MLFLOW_TRACKING_URI, else"
    assert order in text


def test_passwords_and_tokens_are_masked_and_nothing_else() -> None:
    assert redact("http://alice:s3cret@127.0.0.1:5000") == "http://alice:***@127.0.0.1:5000"
    assert redact("postgresql://u:pw@db/x?sslmode=require") == "postgresql://u:***@db/x?sslmode=require"
    assert redact(r"uri=http\://alice\:pw@h\:5000 x=1") == r"uri=http\://alice\:***@h\:5000 x=1"
    assert redact("https://h/api?access_token=abc&x=1") == "https://h/api?access_token=***&x=1"
    assert redact("MLFLOW_TRACKING_PASSWORD: hunter2") == "MLFLOW_TRACKING_PASSWORD: ***"
    for harmless in ("sqlite:////tmp/a.db", "tokenizer=bert", "model.hidden=64", "http://127.0.0.1:5000"):
        assert redact(harmless) == harmless


def test_log_records_are_masked_once_redaction_is_installed(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.INFO, logger="hyrax"):
        logging.getLogger("hyrax").info("tracking to %s", "http://alice:s3cret@host:5000")
    assert "s3cret" not in caplog.text
    assert "http://alice:***@host:5000" in caplog.text


def test_a_server_that_is_not_there_is_reported_within_the_first_contact_limit() -> None:
    started = time.monotonic()
    with pytest.raises(HyraxError, match="did not answer within 2 s") as caught:
        reach_server(f"http://bob:pw@127.0.0.1:{free_port()}", within=2)
    assert 1.5 <= time.monotonic() - started < 5
    assert caught.value.key == "mlflow.tracking_uri"
    assert ":pw@" not in caught.value.render()
    assert "bob:***@" in caught.value.render()


@pytest.mark.slow
def test_command_line_beats_environment_beats_default(tmp_path: Path) -> None:
    args = ["train.epochs=1", "data_set.n_samples=200"]
    env_store = tmp_path / "env.db"
    from_env = hyrax_env({"MLFLOW_TRACKING_URI": f"sqlite:///{env_store}"})

    ok(run_hyrax(args, tmp_path, env=from_env))
    assert env_store.is_file() and not (tmp_path / "mlflow.db").exists()

    ok(run_hyrax([*args, f"mlflow.tracking_uri=sqlite:///{tmp_path}/cli.db"], tmp_path, env=from_env))
    assert (tmp_path / "cli.db").is_file()

    ok(run_hyrax(args, tmp_path))
    assert len(mlflow_runs(tmp_path)) == 1  # the default store got only the run without either

    from mlflow.tracking import MlflowClient

    for store, expected in ((env_store, 1), (tmp_path / "cli.db", 1)):
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        runs = client.search_runs([client.get_experiment_by_name("hyrax").experiment_id])
        assert [r.info.status for r in runs] == ["FINISHED"] * expected, store


@pytest.mark.slow
def test_an_unreachable_server_fails_within_ten_seconds_of_starting(tmp_path: Path) -> None:
    port = free_port()
    for mode in ([], ["-m"]):
        started = time.monotonic()
        env = hyrax_env({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        proc = run_hyrax([*mode, "train.epochs=1"], tmp_path, env=env, timeout=60)
        elapsed = time.monotonic() - started
        user_error(proc, "Error in mlflow.tracking_uri", "did not answer", f"127.0.0.1:{port}")
        assert elapsed < 15, f"{mode}: took {elapsed:.1f} s"  # 5 s of contact, plus start-up on a busy CI
        assert not list(tmp_path.glob("runs/*/*/checkpoints/*.pt"))
