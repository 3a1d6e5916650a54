"""A non-editable install carries the shipped configs: `hyrax-run` works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hyraxtest import ok, run_hyrax

pytestmark = pytest.mark.slow  # builds a wheel, installs it, runs its hyrax-run

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_runs_from_any_directory(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True, timeout=300)
    [wheel] = wheels.glob("hyrax_runner-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    assert (site / "hyrax" / "conf" / "config.yaml").is_file()
    assert (site / "hyrax" / "conf" / "model" / "mlp.yaml").is_file()

    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MLFLOW_TRACKING_URI", None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hyrax, hyrax.config as c; print(hyrax.__file__); print(c.builtin_dir('conf'))",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    proc = ok(
        run_hyrax(
            [
                "model=cnn",
                "data_set=synthetic_classification",
                "model=linear",
                "train.epochs=1",
                "mlflow.enabled=false",
            ],
            elsewhere,
            env,
            timeout=300,
            program=site / "bin" / "hyrax-run",
        )
    )
    assert "epoch 1/1" in proc.stdout
    [best] = (elsewhere / "runs").glob("*/*/checkpoints/best.pt")
    config = torch.load(best, weights_only=False)["config"]
    assert config["model"]["_target_"] == "hyrax.models.builtin.Linear", "the last model= choice wins"
