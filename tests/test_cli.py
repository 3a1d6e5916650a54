"""The real `hyrax-run` end to end: training, tracking, user classes by every kind of name, verbs."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from hyraxtest import (
    HYRAX_RUN,
    TESTS,
    log_text,
    metric_history,
    mlflow_runs,
    ok,
    run_dirs,
    started,
    wait_until,
)


def saved_config(run_dir) -> dict:
    """The config a run saved in its last checkpoint."""
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["config"]


@pytest.mark.slow
def test_default_run_trains_checkpoints_and_tracks(hyrax_run):
    proc = ok(hyrax_run("train.epochs=4", "data_set.noise=3.0", "train.log_every_n_steps=5"))
    [run_dir] = run_dirs(proc.cwd)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert "it/s" not in proc.stderr + proc.stdout, "a progress bar was drawn into a non-terminal"
    [run] = mlflow_runs(proc.cwd)
    assert run.info.status == "FINISHED"
    losses = metric_history(proc.cwd, run.info.run_id, "train/loss")
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert len(metric_history(proc.cwd, run.info.run_id, "train/loss_step")) >= 4
    for key in ("val/loss", "val/accuracy", "test/loss", "test/accuracy", "lr", "samples_per_s"):
        assert key in run.data.metrics, key
    assert run.data.params["optimizer.lr"] == "0.001"
    assert run.data.params["train.epochs"] == "4"
    assert run.data.tags["hyrax.model"] == "hyrax.models.builtin.MLP"
    assert run.data.tags["hyrax.data_set"] == "hyrax.data_sets.builtin.SyntheticClassification"
    artifacts = list((proc.cwd / "mlartifacts").rglob("config.yaml"))
    assert artifacts, "the resolved config was not logged as an artifact"
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "loop", "rng", "config", "mlflow_run_id"} <= set(best)
    assert best["mlflow_run_id"] == run.info.run_id


@pytest.mark.slow
def test_user_classes_by_dotted_path_each_contract(hyrax_run, tmp_path):
    cases = {
        "dict items + to_tensor": [
            "model=userpkg.models.TelescopeNet",
            "data_set=userpkg.data.TelescopeData",
        ],
        "image/label + train_step": [
            "model=userpkg.models.StepNet",
            "data_set=userpkg.data.ImageLabelData",
            "model.width=8",
        ],
        "plain module, default step": [
            "model=userpkg.models.PlainNet",
            "data_set=userpkg.data.ImageLabelData",
            "model.hidden=12",
        ],
        "renamed methods": ["model=userpkg.models.RenamedNet", "data_set=userpkg.data.TelescopeData"],
        "iterable stream": ["model=userpkg.models.PlainNet", "data_set=userpkg.data.PairStream"],
    }
    for name, args in cases.items():
        proc = ok(hyrax_run(*args, "train.epochs=3", "mlflow.experiment=contracts"))
        assert "val/loss" in proc.stdout, name
    runs = mlflow_runs(tmp_path, "contracts")
    assert [r.info.status for r in runs] == ["FINISHED"] * len(cases)
    step_run = runs[1]
    assert "train/grad_seen" in step_run.data.metrics, "extra train_step keys must be logged"
    assert step_run.data.params["model.width"] == "8"
    for run in runs:
        losses = metric_history(tmp_path, run.info.run_id, "train/loss")
        assert losses[-1] < losses[0], run.data.tags["hyrax.model"]


@pytest.mark.slow
def test_torch_classes_and_required_parameters_as_keys(hyrax_run):
    proc = ok(
        hyrax_run(
            "model=torch.nn.Linear",
            "model.in_features=20",
            "model.out_features=4",
            "optimizer=torch.optim.RAdam",
            "optimizer.lr=0.01",
            "criterion=CrossEntropyLoss",
            "scheduler=step",
            "scheduler.step_size=1",
            "train.epochs=2",
        )
    )
    [run] = mlflow_runs(proc.cwd)
    assert run.data.params["model._target_"] == "torch.nn.modules.linear.Linear"
    assert run.data.params["optimizer._target_"] == "torch.optim.radam.RAdam"
    assert run.data.metrics["lr"] < 0.01, "the step scheduler did not run"


@pytest.mark.slow
def test_bare_class_names_from_imported_packages(hyrax_run):
    proc = ok(
        hyrax_run(
            "model=TelescopeNet",
            "data_set=TelescopeData",
            "train.epochs=1",
            "mlflow.enabled=false",
            env={"HYRAX_IMPORTS": "userpkg.models,userpkg.data"},
        )
    )
    assert "epoch 1/1" in proc.stdout
    [run_dir] = run_dirs(proc.cwd)
    config = saved_config(run_dir)
    assert config["model"]["_target_"] == "userpkg.models.TelescopeNet"
    assert config["data_set"]["_target_"] == "userpkg.data.TelescopeData"


@pytest.mark.slow
def test_regression_option_selects_its_criterion(hyrax_run):
    proc = ok(hyrax_run("data_set=synthetic_regression", "model=linear", "train.epochs=2"))
    [run] = mlflow_runs(proc.cwd)
    assert run.data.params["criterion._target_"] == "torch.nn.MSELoss"
    assert "val/accuracy" not in run.data.metrics


@pytest.mark.slow
def test_grid_sweep_over_dotted_classes(hyrax_run):
    proc = ok(
        hyrax_run(
            "-m",
            "model=userpkg.models.PlainNet,mlp",
            "data_set=userpkg.data.ImageLabelData",
            "train.epochs=1",
        )
    )
    jobs = sorted(p for p in (proc.cwd / "multiruns").glob("*/*/*") if p.is_dir())
    assert len(jobs) == 2
    models = sorted(r.data.tags["hyrax.model"] for r in mlflow_runs(proc.cwd) if "hyrax.model" in r.data.tags)
    assert models == ["hyrax.models.builtin.MLP", "userpkg.models.PlainNet"]


@pytest.mark.slow
def test_prepare_test_and_infer_verbs(hyrax_run, tmp_path):
    out = ok(
        hyrax_run("verb=prepare", "data_set=userpkg.data.TelescopeData", "model=userpkg.models.TelescopeNet")
    )
    assert "240 items" in out.stdout and "train=192, validate=24, test=24" in out.stdout
    assert "'flux_g': ndarray(4,)" in out.stdout
    ok(
        hyrax_run(
            "data_set=userpkg.data.TelescopeData", "model=userpkg.models.TelescopeNet", "train.epochs=2"
        )
    )
    [trained] = [d for d in run_dirs(tmp_path) if (d / "checkpoints").is_dir()]
    test = ok(
        hyrax_run(
            "verb=test",
            f"ckpt_path={trained}",
            "data_set=userpkg.data.TelescopeData",
            "model=userpkg.models.TelescopeNet",
        )
    )
    assert f"Using checkpoint {trained / 'checkpoints' / 'best.pt'}" in test.stdout
    assert "test/loss=" in test.stdout
    infer = ok(
        hyrax_run(
            "verb=infer",
            f"ckpt_path={trained}",
            "data_set=userpkg.data.TelescopeData",
            "model=userpkg.models.TelescopeNet",
        )
    )
    assert "Using checkpoint" in infer.stdout
    infer_dir = [d for d in run_dirs(tmp_path) if (d / "predictions.npy").exists()]
    assert len(infer_dir) == 1
    predictions = np.load(infer_dir[0] / "predictions.npy")
    ids = np.load(infer_dir[0] / "ids.npy")
    assert predictions.shape == (240, 3) and ids[0] == "obj0000" and len(ids) == 240


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories(tmp_path):
    command = [HYRAX_RUN, "train.epochs=1", "mlflow.enabled=false"]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with started(command, tmp_path, logs[0]) as first, started(command, tmp_path, logs[1]) as second:
        codes = [first.wait(timeout=120), second.wait(timeout=120)]
    assert codes == [0, 0], "\n".join(log_text(log) for log in logs)
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    assert all((d / "checkpoints" / "last.pt").is_file() for d in dirs)


def test_help_is_fast_path_and_lists_options(hyrax_run):
    proc = ok(hyrax_run("--help"))
    assert "model: cnn, linear, mlp" in proc.stdout
    assert "train.epochs=10" in proc.stdout


def test_cli_module_imports_no_heavy_libraries():
    import subprocess
    import sys

    code = (
        "import sys, hyrax.cli; print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_progress_bar_when_asked_and_ctrl_c_marks_the_run_killed(tmp_path):
    command = [
        HYRAX_RUN,
        "model=userpkg.models.PlainNet",
        "train.progress=true",
        "data_set=userpkg.data.ImageLabelData",
        "data_set.delay=0.003",
        "train.epochs=50",
    ]
    log = tmp_path / "run.log"
    with started(command, tmp_path, log) as proc:
        wait_until(
            lambda: list((tmp_path / "runs").glob("*/*/checkpoints/last.pt")), 120, "a last.pt", log, proc
        )
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    output = log_text(log)
    assert proc.returncode == 130 and "Interrupted" in output and "Traceback" not in output, output
    assert "epoch 2:" in output and "it/s" in output, "no progress bar although train.progress=true"
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "KILLED"


def test_users_own_conf_folder_extends_the_shipped_one(hyrax_run, tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text(
        "_target_: hyrax.models.builtin.MLP\nhidden: 7\ndepth: 1\nnum_outputs: null\n"
    )
    proc = ok(hyrax_run("model=tiny", "--cfg", "job"))
    assert "hidden: 7" in proc.stdout
    listed = ok(hyrax_run("--help")).stdout
    assert "model: cnn, linear, mlp, tiny" in listed


@pytest.mark.slow
def test_readme_tour_package_in_the_working_directory(hyrax_run, tmp_path):
    """The README's own model and data set, saved as ./mypkg, train with the README's command."""
    readme = (TESTS.parent / "README.md").read_text()
    start = readme.index("# mypkg/__init__.py")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(readme[start : readme.index("```", start)])
    command = next(line for line in readme.splitlines() if line.startswith("hyrax-run model=mypkg.MyModel"))
    proc = ok(hyrax_run(*command.split()[1:], "train.epochs=2", "mlflow.enabled=false"))
    assert "epoch 2/2" in proc.stdout
    [run_dir] = run_dirs(tmp_path)
    assert saved_config(run_dir)["model"]["_target_"] == "mypkg.MyModel"
    weights = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert weights["net.0.weight"].shape == (64, 8), "model.hidden=64 of the README's command"
