"""Fixtures that run the real `hyrax-run` in a fresh directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hyraxtest import BIN, hyrax_env


@pytest.fixture
def hyrax_run(tmp_path: Path):
    """Run `hyrax-run ARGS` in a fresh directory; returns the CompletedProcess (cwd in `.cwd`)."""

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess:
        where = cwd or tmp_path
        proc = subprocess.run(
            [str(BIN / "hyrax-run"), *args],
            cwd=where,
            env=hyrax_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        proc.cwd = where  # type: ignore[attr-defined]
        return proc

    return run
