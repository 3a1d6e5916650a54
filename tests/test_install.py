"""A non-editable install carries the shipped configs: `hyrax-run` works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hyraxtest import ok

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
        subprocess.run(
            [
                str(site / "bin" / "hyrax-run"),
                "model=cnn",
                "data_set=synthetic_classification",
                "model=linear",
                "train.epochs=1",
                "mlflow.enabled=false",
            ],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    assert "epoch 1/1" in proc.stdout
    assert list((elsewhere / "runs").glob("*/*/checkpoints/best.pt"))
