"""LightningModules run by Lightning's own Trainer: tracked in Hyrax's MLflow run, checkpointed, resumed,
swept and pruned like Hyrax's own models (the classes are in tests/lightningpkg/)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hyraxtest import hyrax_env, metric_history, mlflow_runs, ok, parent_and_children, run_dirs, user_error
from mlflow import MlflowClient

from hyrax import tags
from hyrax.data_sets.batches import rank_order
from hyrax.errors import HyraxError
from hyrax.train import checkpoint
from hyrax.train.lightning_parts import hyrax_names, lightning_package, logged_name, sigint_kept
from hyrax.train.lightning_ranks import check_container_arguments, equal_steps
from hyrax.train.lightning_run import check_lightning, check_settings, wants_lightning

PKG = "lightningpkg"
QUIET = ["mlflow.system_metrics=false", "train.tensorboard=false"]  # less to start in each run
TWO = ["train.devices=2", "train.device=cpu"]  # two data-parallel ranks (Lightning's ddp, gloo)


def _ckpt(path: Path) -> dict:
    """A checkpoint Lightning wrote, read as Hyrax reads it (weights only)."""
    return checkpoint.load(path, key="train.resume")


def _log(proc: subprocess.CompletedProcess) -> str:
    """What a run printed: Hyrax's log (stdout) and Lightning's messages (stderr)."""
    return proc.stdout + proc.stderr


def _train_cfg(**changes) -> dict:
    from dataclasses import asdict

    from hyrax.config import TrainConfig

    return {**asdict(TrainConfig()), **changes}


# --- which classes Lightning runs, decided without importing Lightning ---------------------------------


def _lightning_base(module: str, name: str = "LightningModule") -> type:
    """A class named as Lightning's base is, in `module` (how `lightning.pytorch` spells its classes)."""
    return type(name, (torch.nn.Module,), {"__module__": module})


def test_lightning_classes_are_recognised_by_their_ancestry_in_both_spellings():
    new_style = type("Mine", (_lightning_base("lightning.pytorch.core.module"),), {})
    old_style = type("Mine", (_lightning_base("pytorch_lightning.core.module"),), {})
    data = _lightning_base("lightning.pytorch.core.datamodule", "LightningDataModule")
    assert lightning_package(new_style) == "lightning.pytorch"
    assert lightning_package(old_style) == "pytorch_lightning"
    assert lightning_package(data, "LightningDataModule") == "lightning.pytorch"
    assert lightning_package(torch.nn.Linear) is None
    assert lightning_package(type("Mine", (_lightning_base("mypkg.lightning"),), {})) is None


def test_wants_lightning_for_modules_and_containers_only():
    def config(model: str, data_set: str = "hyrax.data_sets.builtin.SyntheticClassification") -> dict:
        return {"model": {"_target_": model}, "data_set": {"_target_": data_set}}

    assert wants_lightning(config(f"{PKG}.modules.Classifier"))
    assert wants_lightning(config(f"{PKG}.flashlike.RegressionContainer"))
    assert not wants_lightning(config("hyrax.models.builtin.MLP"))
    with pytest.raises(HyraxError, match="LinearData is a LightningDataModule") as err:
        wants_lightning(config("hyrax.models.builtin.MLP", f"{PKG}.modules.LinearData"))
    assert err.value.key == "data_set"


def test_settings_lightning_is_not_run_with_are_refused_naming_the_key():
    config = {
        "model": {"_target_": f"{PKG}.modules.Classifier"},
        "data_set": {"_target_": "hyrax.data_sets.builtin.SyntheticClassification"},
        "train": _train_cfg(devices=2, device="cpu"),
    }
    check_lightning(config)  # what hyrax.early_checks runs: two CPU ranks are fine
    with pytest.raises(HyraxError, match="names one device") as err:
        check_settings(_train_cfg(devices=2, device="cuda:1"))
    assert err.value.key == "train.device"
    with pytest.raises(HyraxError, match="at least one rank") as err:
        check_settings(_train_cfg(devices=0, device="cpu"))
    assert err.value.key == "train.devices"
    with pytest.raises(HyraxError, match="not one Lightning's Trainer takes") as err:
        check_settings(_train_cfg(precision="8"))
    assert err.value.key == "train.precision"
    check_settings(_train_cfg(precision="bf16-mixed"))


def test_a_container_cannot_choose_the_processes_hyrax_starts():
    check_container_arguments({"max_epochs": 2, "devices": 1, "strategy": "auto"}, "Mine")
    for key, value in [("devices", 2), ("strategy", "ddp_spawn"), ("num_nodes", 2)]:
        with pytest.raises(HyraxError, match=f"sets the Trainer's {key}=") as err:
            check_container_arguments({key: value}, "Mine")
        assert err.value.key == "train.devices"


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_takes_the_same_steps_leaving_out_fewer_items_than_ranks(world):
    for n in range(120):
        for batch_size in (1, 3, 7):
            shares = [rank_order(n, batch_size, r, world, False, torch.Generator()) for r in range(world)]
            steps = equal_steps(n, batch_size, world)
            assert steps == min(math.ceil(len(share) / batch_size) for share in shares)
            trained = sum(min(len(share), steps * batch_size) for share in shares)
            assert n - world < trained <= n, (n, batch_size, world)


def test_ctrl_c_that_lightning_turned_into_an_exit_is_a_keyboard_interrupt_again():
    judge = SimpleNamespace(exception=KeyboardInterrupt())  # what EpochJudge.on_exception recorded
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), sigint_kept(judge):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as Lightning leaves it
        sys.exit(1)
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(SystemExit), sigint_kept(SimpleNamespace(exception=None)):
        sys.exit(3)  # any other exit stays one


def test_lightning_metric_names_answer_to_hyrax_names():
    logged = {"train_loss": 0.5, "val_loss": 0.4, "val/accuracy": 0.9, "lr": 0.1}
    named = hyrax_names(logged)
    assert named["val/loss"] == 0.4 and named["train/loss"] == 0.5 and named["val_loss"] == 0.4
    assert logged_name("val/loss", logged) == "val_loss"
    assert logged_name("val/accuracy", logged) == "val/accuracy"
    assert logged_name("val/f1", logged) is None


def test_a_run_directory_with_lightning_checkpoints_is_found_for_resume(tmp_path):
    folder = checkpoint.checkpoint_dir(tmp_path)
    folder.mkdir()
    for name in ("best.ckpt", "last.ckpt"):
        (folder / name).touch()
    assert checkpoint.find(tmp_path, prefer=checkpoint.LAST, key="train.resume") == folder / "last.ckpt"
    assert checkpoint.resume_source("auto", tmp_path) == folder / "last.ckpt"
    assert checkpoint.find(tmp_path) == folder / "best.ckpt"


def test_missing_extra_is_one_message_saying_what_to_install(tmp_path):
    # Lightning is installed here: the run hides it the way Python reports a missing package.
    script = (
        "import sys; sys.modules['pytorch_lightning'] = sys.modules['lightning'] = None\n"
        "from hyrax.cli import main\n"
        f"sys.argv = ['hyrax-run', 'model={PKG}.modules.Classifier', 'train.epochs=1']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=hyrax_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    message = user_error(
        proc, "needs PyTorch Lightning, which is not installed", "pip install 'hyrax-runner[lightning]'"
    )
    assert "Error in model:" in message and len(message.strip().splitlines()) == 2
    assert not (tmp_path / "runs").exists()


# --- real runs ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lightning_module_on_a_hyrax_data_set_is_tracked_checkpointed_stopped_and_tested(hyrax_run, tmp_path):
    # min_delta 10: no epoch after the first counts as better, so patience 2 stops it after epoch 3 of 5
    stopping = ["train.early_stopping.patience=2", "train.early_stopping.min_delta=10"]
    proc = ok(
        hyrax_run(
            f"model={PKG}.modules.Classifier",
            "model.hidden=24",
            "train.epochs=5",
            "data_set.n_samples=800",
            *stopping,
            *QUIET,
        )
    )
    assert "with Lightning's Trainer" in _log(proc) + proc.stdout
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden"] == "24"
    assert not any(p.startswith(("optimizer.", "criterion.")) for p in run.data.params)  # its own choice
    losses = metric_history(tmp_path, run.info.run_id, "train/loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert metric_history(tmp_path, run.info.run_id, "epoch") == [1.0, 2.0, 3.0]
    val = metric_history(tmp_path, run.info.run_id, "val/loss")
    best = int(run.data.metrics["best_epoch"])
    assert run.data.metrics["objective"] == pytest.approx(min(val)) == pytest.approx(val[best - 1])
    assert "test/loss" in run.data.metrics and "test/accuracy" in run.data.metrics
    [run_dir] = run_dirs(tmp_path)
    assert {p.name for p in checkpoint.checkpoint_dir(run_dir).iterdir()} == {"best.ckpt", "last.ckpt"}
    last = _ckpt(checkpoint.checkpoint_dir(run_dir) / "last.ckpt")
    assert last["hyper_parameters"]["hidden"] == 24  # the override reached the module's hparams
    assert last["hyper_parameters"]["num_outputs"] == 4  # counted from the data, as for Hyrax models
    assert last["loop"]["epoch"] == 3 and last["mlflow_run_id"] == run.info.run_id


@pytest.mark.slow
def test_data_module_run_resumes_auto_and_from_its_ckpt_in_the_same_mlflow_run(hyrax_run, tmp_path):
    fixed = tmp_path / "runs" / "mine"
    common = [
        f"model={PKG}.modules.Regressor",
        f"data_set={PKG}.modules.LinearData",
        "model.lr=0.05",
        *QUIET,
    ]
    first = ok(
        hyrax_run(
            *common, f"hydra.run.dir={fixed}", "train.epochs=2", "train.resume=auto", "data_set.batch_size=16"
        )
    )
    assert "epoch 2/2" in _log(first)
    second = ok(
        hyrax_run(
            *common, f"hydra.run.dir={fixed}", "train.epochs=3", "train.resume=auto", "data_set.batch_size=16"
        )
    )
    assert "epoch 3/3" in _log(second) and "epoch 1/3" not in _log(second)
    last = checkpoint.checkpoint_dir(fixed) / "last.ckpt"
    third = ok(hyrax_run(*common, f"train.resume={last}", "train.epochs=4", "data_set.batch_size=16"))
    assert f"resuming from {last} (after epoch 3)" in _log(third)
    assert "epoch 4/4" in _log(third) and "epoch 3/4" not in _log(third)
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["data_set.batch_size"] == "16"
    assert metric_history(tmp_path, run.info.run_id, "epoch") == [1.0, 2.0, 3.0, 4.0]
    val = metric_history(tmp_path, run.info.run_id, "val_loss")
    assert len(val) == 4 and val[-1] < val[0]
    # the StepLR's state came back from the checkpoint: 0.05 * 0.9 after each of the 4 epochs
    assert metric_history(tmp_path, run.info.run_id, "lr")[-1] == pytest.approx(0.05 * 0.9**4)
    assert run.data.metrics["objective"] == pytest.approx(min(val))  # val/loss found as val_loss
    assert "test_loss" in run.data.metrics
    assert _ckpt(last)["hyper_parameters"]["lr"] == 0.05


@pytest.mark.slow
def test_flash_style_task_built_by_a_container(hyrax_run, tmp_path):
    proc = ok(
        hyrax_run(
            f"model={PKG}.flashlike.RegressionContainer",
            "model.learning_rate=0.1",
            "train.precision=bf16-mixed",
            "train.checkpoint.save_best=false",
            *QUIET,
        )
    )
    assert "RegressionContainer built RegressionTask and LinearData" in _log(proc)
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.learning_rate"] == "0.1"
    assert metric_history(tmp_path, run.info.run_id, "epoch") == [1.0, 2.0]  # the container's max_epochs
    losses = metric_history(tmp_path, run.info.run_id, "train_loss")
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert run.data.tags[tags.MODEL] == f"{PKG}.flashlike.RegressionContainer"
    [run_dir] = run_dirs(tmp_path)
    assert {p.name for p in checkpoint.checkpoint_dir(run_dir).iterdir()} == {"last.ckpt"}
    hparams = _ckpt(checkpoint.checkpoint_dir(run_dir) / "last.ckpt")["hyper_parameters"]
    assert hparams["learning_rate"] == 0.1 and hparams["num_inputs"] == 8


@pytest.mark.slow
def test_pruned_lightning_trial_ends_killed_and_pruned(hyrax_run, tmp_path):
    sweep_dir = tmp_path / "multiruns" / "prune"
    ok(
        hyrax_run(
            "-m",
            f"model={PKG}.modules.Classifier",
            "hydra/sweeper=optuna",
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.enqueue_trials=[{model.lr:0.02},{model.lr:0.03},{model.lr:1e-7}]",
            "model.lr=tag(log, interval(1e-8, 1e-1))",
            "train.epochs=2",
            "data_set.n_samples=600",
            f"hydra.sweep.dir={sweep_dir}",
            *QUIET,
        )
    )
    _, children = parent_and_children(mlflow_runs(tmp_path))
    states = {
        int(c.data.tags["hyrax.trial_number"]): (c.data.tags.get(tags.TRIAL_STATE), c.info.status)
        for c in children
    }
    assert states == {0: (None, "FINISHED"), 1: (None, "FINISHED"), 2: ("PRUNED", "KILLED")}
    pruned = next(c for c in children if c.data.tags["hyrax.trial_number"] == "2")
    assert metric_history(tmp_path, pruned.info.run_id, "epoch") == [1.0]
    import optuna

    from hyrax.search.storage import open_storage

    storage = open_storage(str(sweep_dir / "optuna.journal"))
    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert pruned.data.tags[tags.OPTUNA_STATE] == "PRUNED"


# --- data-parallel runs (train.devices=2): Hyrax starts the ranks, Lightning's ddp trains them -----------


def _noted(out: Path, rank: int) -> list[tuple[int, int, str]]:
    """What rank `rank` noted after each training epoch: (epoch, batches, weights checksum)."""
    path = out / f"weights_rank{rank}.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(int(e), int(b), c) for e, b, c in (line.split() for line in lines)]


@pytest.mark.slow
def test_two_ranks_on_a_hyrax_data_set_are_one_run_with_the_same_weights_and_resume_together(
    hyrax_run, tmp_path
):
    out, fixed = tmp_path / "notes", tmp_path / "runs" / "mine"
    out.mkdir()
    common = [
        *TWO,
        f"model={PKG}.ranked.SyncedClassifier",
        "data_set.n_samples=810",
        f"hydra.run.dir={fixed}",
        "train.resume=auto",
        *QUIET,
    ]
    env = {"HYRAX_TEST_OUT": str(out)}
    first = ok(hyrax_run(*common, "train.epochs=2", env=env))
    assert "started 1 more ranks" in _log(first) and "on 2 ranks" in _log(first)
    second = ok(hyrax_run(*common, "train.epochs=3", env=env))  # every rank resumes from last.ckpt
    assert "epoch 3/3" in _log(second) and "epoch 2/3" not in _log(second)
    [run] = mlflow_runs(tmp_path)  # one run, not one per rank (nor per start)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.devices"] == "2" and run.data.tags[tags.RANKS] == "2"
    assert metric_history(tmp_path, run.info.run_id, "epoch") == [1.0, 2.0, 3.0]
    losses = metric_history(tmp_path, run.info.run_id, "train/loss")
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.5, losses
    val = metric_history(tmp_path, run.info.run_id, "val/loss")  # averaged over the ranks (sync_dist)
    assert run.data.metrics["objective"] == pytest.approx(min(val))
    assert "test/loss" in run.data.metrics
    assert {p.name for p in checkpoint.checkpoint_dir(fixed).iterdir()} == {"best.ckpt", "last.ckpt"}
    # 648 train items in global batches of 2 x 64: 5 full ones and 8 items for 2 ranks, so 6 steps each.
    # Rank 1 restored Adam's moments too: fresh ones would make its weights drift from rank 0's.
    rank0, rank1 = _noted(out, 0), _noted(out, 1)
    assert [(e, b) for e, b, _ in rank0] == [(0, 6), (1, 6), (2, 6)]
    assert rank0 == rank1


@pytest.mark.slow
def test_two_ranks_with_a_data_module_use_lightnings_distributed_sampler(hyrax_run, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    ok(
        hyrax_run(
            *TWO,
            f"model={PKG}.ranked.SyncedRegressor",
            f"data_set={PKG}.modules.LinearData",
            "train.epochs=2",
            *QUIET,
            env={"HYRAX_TEST_OUT": str(out)},
        )
    )
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED"
    losses = metric_history(tmp_path, run.info.run_id, "train_loss")
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert "test_loss" in run.data.metrics
    # 358 train items: 179 per rank in batches of 32
    rank0, rank1 = _noted(out, 0), _noted(out, 1)
    assert [(e, b) for e, b, _ in rank0] == [(0, 6), (1, 6)] and rank0 == rank1


@pytest.mark.slow
def test_a_pruned_two_rank_lightning_trial_is_one_trial_and_stops_both_ranks(hyrax_run, tmp_path):
    sweep_dir = tmp_path / "multiruns" / "prune"
    proc = ok(
        hyrax_run(
            "-m",
            *TWO,
            f"model={PKG}.modules.Classifier",
            "hydra/sweeper=optuna",
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=1",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.enqueue_trials=[{model.lr:0.02},{model.lr:1e-7}]",
            "model.lr=tag(log, interval(1e-8, 1e-1))",
            "train.epochs=2",
            "data_set.n_samples=600",
            f"hydra.sweep.dir={sweep_dir}",
            *QUIET,
            timeout=300,
        )
    )
    _, children = parent_and_children(mlflow_runs(tmp_path))  # one child per trial, not per rank
    states = {
        int(c.data.tags["hyrax.trial_number"]): (c.data.tags.get(tags.TRIAL_STATE), c.info.status)
        for c in children
    }
    assert states == {0: (None, "FINISHED"), 1: ("PRUNED", "KILLED")}
    assert all(c.data.tags[tags.RANKS] == "2" for c in children)
    pruned = next(c for c in children if c.data.tags["hyrax.trial_number"] == "1")
    assert metric_history(tmp_path, pruned.info.run_id, "epoch") == [1.0]
    import optuna

    from hyrax.search.storage import open_storage

    storage = open_storage(str(sweep_dir / "optuna.journal"))
    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert _log(proc).count("rank 1: rank 0 stopped the run after epoch 1 (its trial was pruned)") == 1


@pytest.mark.slow
def test_debug_presets_apply_to_lightning_models(hyrax_run, tmp_path):
    # overfit: lr 0 cannot memorise anything, so the check fails the run with exit 2
    proc = hyrax_run(
        f"model={PKG}.modules.Classifier", "debug=overfit", "model.lr=0", "train.epochs=4", *QUIET
    )
    user_error(proc, "did not memorise 1 repeated train batch(es)", "train.overfit_batches")
    [failed] = mlflow_runs(tmp_path)
    assert failed.info.status == "FAILED" and failed.data.tags["hyrax.debug"].startswith("overfit:")
    # profile: the same torch.profiler trace as Hyrax's loop writes, as artifacts of a tagged run
    ok(hyrax_run(f"model={PKG}.modules.Classifier", "debug=profile", "data_set.n_samples=800", *QUIET))
    [profiled] = [r for r in mlflow_runs(tmp_path) if r.info.run_id != failed.info.run_id]
    assert profiled.data.tags["hyrax.debug"].startswith("profile:")
    [run_dir] = [d for d in run_dirs(tmp_path) if (d / "profile").is_dir()]
    events = json.loads((run_dir / "profile" / "trace.json").read_text())["traceEvents"]
    assert any(e.get("name", "").startswith("ProfilerStep#") for e in events)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(profiled.info.run_id, "profile")} == {
        "profile/trace.json",
        "profile/top_ops.txt",
    }
