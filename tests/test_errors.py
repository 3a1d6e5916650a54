"""Bad input: exit code 2, one message naming the key and the fix, no traceback, nothing lost."""

from __future__ import annotations

import pytest
from hyraxtest import mlflow_runs, ok, run_dirs, user_error

NO_TRACKING = "mlflow.enabled=false"
# Errors found while the command line is read cost about a second; the others import torch, build the
# parts or train: those are marked slow.
slow = pytest.mark.slow


@slow
def test_unknown_group_option_lists_closest_matches(hyrax_run):
    err = user_error(hyrax_run("model=mpl", NO_TRACKING), "Error in model", "mpl", "Closest matches: mlp")
    assert "Looked in" in err


@slow
def test_unknown_dotted_class(hyrax_run):
    user_error(
        hyrax_run("model=userpkg.models.TelescopNet", NO_TRACKING),
        "userpkg.models.TelescopNet",
        "TelescopeNet",
    )


def test_unknown_key_suggests_the_right_one(hyrax_run):
    user_error(hyrax_run("train.epoch=3", NO_TRACKING), "train.epoch", "Did you mean train.epochs?")


def test_wrong_value_type_names_the_key(hyrax_run):
    user_error(hyrax_run("train.epochs=abc", NO_TRACKING), "train.epochs", "abc")


@slow
def test_missing_required_constructor_parameter(hyrax_run):
    user_error(
        hyrax_run("model=torch.nn.Linear", "model.out_features=4", NO_TRACKING),
        "model.in_features",
        "Fix: add model.in_features=VALUE",
    )


@slow
def test_missing_data_file(hyrax_run):
    user_error(
        hyrax_run("data_set=numpy", "data_set.path=/no/such/file.npz", NO_TRACKING),
        "data_set.path",
        "/no/such/file.npz",
        "does not exist",
    )


@slow
def test_model_data_mismatch_is_found_before_training_and_marks_the_run_failed(hyrax_run):
    proc = hyrax_run("model=torch.nn.Linear", "model.in_features=7", "model.out_features=4")
    user_error(proc, "Linear", "(8, 20)", "expects 7 features")
    [run] = mlflow_runs(proc.cwd)
    assert run.info.status == "FAILED"
    assert "cannot take the data" in run.data.tags["hyrax.error"]


@slow
def test_output_label_mismatch_names_both_shapes(hyrax_run):
    user_error(
        hyrax_run(
            "model=torch.nn.Linear",
            "model.in_features=20",
            "model.out_features=1",
            "criterion=mse",
            NO_TRACKING,
        ),
        "does not fit labels",
        "(8, 1)",
        "(8,)",
    )


@slow
def test_train_step_without_loss(hyrax_run):
    user_error(
        hyrax_run("model=userpkg.models.NoLossNet", "data_set=userpkg.data.ImageLabelData", NO_TRACKING),
        "without a 'loss' key",
        "NoLossNet.train_step",
    )


@slow
def test_dict_items_without_to_tensor(hyrax_run):
    user_error(
        hyrax_run("model=userpkg.models.PlainNet", "data_set=userpkg.data.NoImageData", NO_TRACKING),
        "define @staticmethod to_tensor",
        "['pixels', 'target']",
    )


@slow
def test_nan_loss_stops_keeps_checkpoints_and_fails_the_run(hyrax_run):
    proc = hyrax_run(
        "model=userpkg.models.NanNet",
        "model.nan_after=10",
        "data_set=userpkg.data.ImageLabelData",
        "train.batch_size=32",
        "train.epochs=5",
    )
    user_error(proc, "training loss became nan at epoch 2, step 11")
    [run_dir] = run_dirs(proc.cwd)
    assert (run_dir / "checkpoints" / "last.pt").is_file(), "checkpoints written before the NaN must stay"
    [run] = mlflow_runs(proc.cwd)
    assert run.info.status == "FAILED"


@slow
def test_checkpoint_is_required_for_infer(hyrax_run):
    user_error(hyrax_run("verb=infer", NO_TRACKING), "ckpt_path", "never guesses")


@slow
def test_crash_in_user_code_shows_their_traceback_only(hyrax_run):
    proc = hyrax_run("model=userpkg.models.CrashNet", "data_set=userpkg.data.ImageLabelData", NO_TRACKING)
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr
    assert "userpkg/models.py" in proc.stderr and "helper_that_divides" in proc.stderr
    assert "hyrax/train" not in proc.stderr and "hydra/_internal" not in proc.stderr


@slow
def test_full_error_shows_everything(hyrax_run):
    proc = hyrax_run("model=mpl", NO_TRACKING, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "mpl" in proc.stderr, proc.stderr


@slow
def test_good_input_after_bad_still_works(hyrax_run, tmp_path):
    user_error(hyrax_run("train.epoch=1", NO_TRACKING), "train.epoch")
    assert not (tmp_path / "runs").exists(), "bad input must not leave a run directory"
    proc = ok(hyrax_run("train.epochs=1", NO_TRACKING))
    assert "epoch 1/1" in proc.stdout
    [run_dir] = run_dirs(tmp_path)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
