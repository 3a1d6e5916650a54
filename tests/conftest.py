"""Fixtures that run the real `hyrax-run` in a fresh directory, and a real MLflow store to share."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hyraxtest import Store, hyrax_env, run_hyrax


@pytest.fixture
def hyrax_run(tmp_path: Path):
    """`hyrax_run(*args, cwd=None, env=None, timeout=240)`: `run_hyrax` in the test's fresh directory
    (or `cwd`), with `env` added to `hyrax_env()`; returns the CompletedProcess (cwd in `.cwd`)."""

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess:
        return run_hyrax(args, cwd or tmp_path, hyrax_env(env), timeout)

    return run


@pytest.fixture(scope="session")
def shared_store_root(tmp_path_factory) -> Path:
    """The directory of the MLflow store that in-process tests share (one per xdist worker, see `store`)."""
    return tmp_path_factory.mktemp("mlflow_store")


@pytest.fixture
def store(shared_store_root: Path, request) -> Store:
    """The shared MLflow SQLite store, with an experiment that only this test tracks into."""
    return Store(shared_store_root, re.sub(r"[^\w.-]+", "_", request.node.nodeid))
