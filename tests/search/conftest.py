"""Fixtures for the sweeper tests: run the tiny Hydra app in a subprocess, find what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hyrax.search.results import RESULTS_FILE
from hyrax.search.storage import JOURNAL_FILE

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "app" / "quadratic.py"


class SweepApp:
    """Multiruns of `app/quadratic.py` into one sweep dir; cwd is `workdir` (no ./conf there).

    The app reports failures as `hyrax-run` does: bad input exits with code 2 and one message.
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.sweep_dir = workdir / "sweep"
        self.journal = self.sweep_dir / JOURNAL_FILE  # where the study is with the default storage

    def command(self, *overrides: str, config: str = "quadratic") -> list[str]:
        return [
            sys.executable,
            str(APP),
            "-m",
            f"--config-name={config}",
            f"hydra.sweep.dir={self.sweep_dir}",
            *overrides,
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env.pop("HYDRA_FULL_ERROR", None)
        return env

    def run(
        self, *overrides: str, config: str = "quadratic", check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.command(*overrides, config=config),
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"app failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *overrides: str, config: str = "quadratic") -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*overrides, config=config),
            cwd=self.workdir,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def results(self) -> dict:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(self.sweep_dir / RESULTS_FILE))


@pytest.fixture
def app(tmp_path: Path) -> SweepApp:
    return SweepApp(tmp_path)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[[str], SweepApp]:
    """More apps for one test, each with its own work and sweep dir: `make_app("seed1")`."""
    return lambda name: SweepApp(tmp_path / name)
