"""More bad input, each one message naming the key: checked through the API (fast) and the CLI."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import get_class
from hyraxtest import user_error

from hyrax import Hyrax, HyraxError

OFF = "mlflow.enabled=false"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "overrides,key,words",
    [
        (["train.device=cuda"], "train.device", "not available"),
        (["data_set.nan_mode=sometimes"], "data_set.nan_mode", "unknown nan_mode"),
        (["train.split.validate=0.7", "train.split.test=0.7"], "train.split", "add up to 2.2"),
        (["train.split.train=0", "train.split.validate=0.5"], "train.split.train", "train split is empty"),
        (["train.objective.metric=val/f1"], "train.objective.metric", "'val/f1' is not measured"),
        (
            [
                "model=linear",
                "data_set=userpkg.data.PairStream",
                "model.num_outputs=null",
                "data_set._target_=userpkg.data.UnlabeledStream",
            ],
            "model.num_outputs",
            "no labels to count",
        ),
        (["model=torch.nn.ReLU"], "model", "has no trainable parameters"),
        (["model=torch.optim.SGD", "model.lr=0.1"], "model.params", "required parameter 'params'"),
        (["optimizer.lr=-1"], "optimizer.lr", "optimizer.lr must be a number of at least 0, not -1"),
        (
            ["optimizer=sgd", "+optimizer.nesterov=true", "+optimizer.dampening=0.5"],
            "optimizer",
            "SGD rejected its arguments: Nesterov momentum requires",
        ),
        (
            ["scheduler=step", "scheduler.step_size=abc"],
            "scheduler.step_size",
            "takes a value of type int for 'step_size', not 'abc'",
        ),
        (["optimizer.lr=fast"], "optimizer.lr", "takes a number for 'lr', not 'fast'"),
        (["model.hidden=1.5"], "model.hidden", "takes a value of type int for 'hidden', not 1.5"),
        (["verb=dance"], "verb", "unknown verb 'dance'"),
    ],
)
def test_bad_settings_name_their_key(overrides, key, words):
    with pytest.raises(HyraxError) as caught:
        h = Hyrax(overrides=[*overrides, "train.epochs=1", OFF])
        h._run(h.config["verb"])
    assert caught.value.key == key and words in caught.value.message, caught.value.render()


@pytest.mark.parametrize(
    "choice",
    [
        "optimizer=sgd",
        "optimizer=adam",
        "optimizer=adamw",
        "scheduler=step",
        "scheduler=cosine",
        "scheduler=plateau",
        "model=cnn",
        "model=linear",
    ],
)
def test_every_shipped_option_passes_the_type_checks(choice):
    from hyrax.api import as_plain
    from hyrax.train.components import assemble, pick_device

    extra = ["data_set=numpy", "data_set.path=img.npz"] if choice == "model=cnn" else []
    if extra:
        import numpy as np

        np.savez("img.npz", x=np.random.rand(40, 3, 8, 8).astype("float32"), y=np.arange(40) % 2)
    h = Hyrax(overrides=[choice, *extra, "optimizer.weight_decay=0.001", OFF])
    _, model = assemble(as_plain(h.config), pick_device("cpu"))
    group = choice.split("=")[0]
    built = model if group == "model" else getattr(model, group)
    assert isinstance(built, get_class(h.config[group]["_target_"])), (choice, built)
    assert model.optimizer.param_groups[0]["weight_decay"] == 0.001


@pytest.mark.parametrize("criterion", ["mse", "l1", "huber", "bce_with_logits"])
def test_every_shipped_criterion_trains_on_real_valued_targets(criterion):
    import math

    h = Hyrax(
        overrides=[
            "data_set=synthetic_regression",
            "data_set.n_samples=400",
            f"criterion={criterion}",
            "train.epochs=1",
            OFF,
        ]
    )
    model = h.train()
    assert isinstance(model.criterion, get_class(h.config["criterion"]["_target_"]))
    assert math.isfinite(h.objective)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    h = Hyrax(overrides=["train.epochs=1", OFF])
    h.train()
    other = Hyrax(overrides=["model=linear", OFF])
    with pytest.raises(HyraxError, match="holds a hyrax.models.builtin.MLP") as caught:
        other.infer(ckpt_path=str(h.last_run_dir))
    assert caught.value.key == "model"
    with pytest.raises(HyraxError, match="no checkpoint at") as caught:
        other.infer(ckpt_path=str(tmp_path / "nowhere"))
    assert caught.value.key == "ckpt_path"


def test_model_that_is_not_a_module():
    with pytest.raises(HyraxError, match="NotAModel is not a torch.nn.Module") as caught:
        Hyrax(overrides=["model=userpkg.models.NotAModel", OFF]).train()
    assert caught.value.key == "model"


def test_unreadable_checkpoint(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HyraxError, match="cannot read checkpoint") as caught:
        Hyrax(overrides=[OFF]).infer(ckpt_path=str(tmp_path / "broken.pt"))
    assert caught.value.key == "ckpt_path"


def test_inputs_and_labels_of_different_lengths(tmp_path):
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), "float32"), y=np.zeros(9, "int64"))
    with pytest.raises(HyraxError, match="10 inputs but 9 labels") as caught:
        Hyrax(overrides=["data_set=numpy", f"data_set.path={tmp_path}/d.npz", OFF]).prepare()
    assert caught.value.key == "data_set"


def test_csv_without_the_label_column(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(HyraxError, match="no column 'label'") as caught:
        Hyrax(overrides=["data_set=csv", f"data_set.path={tmp_path}/t.csv", OFF]).prepare()
    assert caught.value.key == "data_set.label_column"


def test_csv_read_with_the_wrong_delimiter_names_the_delimiter(tmp_path):
    (tmp_path / "t.csv").write_text("a;b;label\n1;2;0\n3;4;1\n")
    with pytest.raises(HyraxError, match="read with delimiter ',' has a single column") as caught:
        Hyrax(overrides=["data_set=csv", f"data_set.path={tmp_path}/t.csv", OFF]).prepare()
    assert caught.value.key == "data_set.delimiter"
    data = Hyrax(overrides=["data_set=csv", f"data_set.path={tmp_path}/t.csv", "data_set.delimiter=';'", OFF])
    assert len(data.prepare()) == 2


@pytest.mark.slow
def test_unusable_tracking_store_is_bad_input_for_runs_and_sweeps(hyrax_run):
    bad = "mlflow.tracking_uri=sqlite:////proc/no-such-dir/mlflow.db"
    user_error(hyrax_run(bad, "train.epochs=1"), "mlflow.tracking_uri", "cannot use the MLflow store")
    user_error(
        hyrax_run("-m", bad, "train.epochs=1"), "mlflow.tracking_uri", "cannot open the sweep's MLflow run"
    )


@pytest.mark.slow
def test_unknown_verb_on_the_command_line(hyrax_run):
    user_error(hyrax_run("verb=dance", OFF), "Error in verb", "use one of: train, test, infer, prepare")


assert torch  # the API tests above build real models
