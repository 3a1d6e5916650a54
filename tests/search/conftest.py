"""Fixtures for the sweeper tests: run the tiny Hydra app in a subprocess, open its study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "app" / "quadratic.py"


class SweepApp:
    """Multiruns of ``app/quadratic.py`` into one sweep dir; cwd is a temp dir (no ./conf)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sweep_dir = workdir / "sweep"

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

    def study(self, name: str = "quadratic") -> Any:
        """The study in the sweep dir's journal file (the default storage)."""
        import optuna

        from hyrax.search.storage import open_storage

        return optuna.load_study(
            study_name=name, storage=open_storage(str(self.sweep_dir / "optuna.journal"))
        )

    def results(self) -> dict:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(self.sweep_dir / "optimization_results.yaml"))


@pytest.fixture
def app(tmp_path: Path) -> SweepApp:
    return SweepApp(tmp_path)
