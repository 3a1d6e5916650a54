"""Choosing classes and setting values the Hyrax way: `name` keys, Hyrax TOML files, `set_config`, package
defaults; and the bad input around them: an unknown name or table, a key nothing reads."""

from __future__ import annotations

import hyraxlike.data
import hyraxlike.models  # noqa: F401
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hyraxtest import mlflow_runs, ok, user_error

from hyrax import Hyrax, HyraxError
from hyrax.compat.overrides import render

HYRAX_TOML = """
[general]
log_level = "info"
log_destination = "stderr"

[model]
name = "hyraxlike.models.ImageCNN"

[model.ImageCNN]
output_classes = 4

[data_set]
name = "hyraxlike.data.RandomImages"
train_size = 0.7
validate_size = 0.15
test_size = 0.15

[data_loader]
batch_size = 8

[optimizer]
name = "torch.optim.SGD"

["torch.optim.SGD"]
lr = 0.05
momentum = 0.9

["torch.optim.Adam"]
lr = 0.01

[train]
epochs = 2
resume = false
experiment_name = "from_toml"

[download]
sw = "22asec"
"""


def params_of(run) -> dict:
    return run.data.params


@pytest.mark.slow
def test_hyrax_config_file_on_the_command_line(hyrax_run, tmp_path):
    (tmp_path / "my_config.toml").write_text(HYRAX_TOML)
    proc = ok(hyrax_run("--config-file", "my_config.toml", "train.epochs=1"))
    [run] = mlflow_runs(tmp_path, experiment="from_toml")
    params = params_of(run)
    assert run.data.tags["hyrax.model"].endswith("ImageCNN")
    assert params["model.ImageCNN.output_classes"] == "4" and params["optimizer.lr"] == "0.05"
    assert params["optimizer.momentum"] == "0.9" and params["optimizer._target_"].endswith("SGD")
    assert params["train.batch_size"] == "8" and params["data_set.train_size"] == "0.7"
    assert params["train.epochs"] == "1", "the command line wins over the file"
    assert "hyrax-run does not use general.log_destination" in proc.stderr and "[download]" in proc.stderr


@pytest.mark.slow
def test_hyrax_config_toml_in_the_working_directory_is_read_and_c_names_a_file(hyrax_run, tmp_path):
    (tmp_path / "hyrax_config.toml").write_text(HYRAX_TOML)
    proc = ok(hyrax_run("-c", "job"))
    assert "ImageCNN" in proc.stdout and "reading ./hyrax_config.toml" in proc.stderr, "-c job stays Hydra's"
    (tmp_path / "other.toml").write_text(HYRAX_TOML.replace("output_classes = 4", "output_classes = 6"))
    shown = ok(hyrax_run("-c", "other.toml", "--cfg", "job"))
    assert "output_classes: 6" in shown.stdout


@pytest.mark.slow
def test_name_keys_on_the_command_line_choose_the_class(hyrax_run, tmp_path):
    for spelling in ("model.name", "+model.name", "++model.name"):
        shown = ok(
            hyrax_run(
                f"{spelling}=hyraxlike.models.ImageCNN",
                "data_set.name=RandomImages",
                "--cfg",
                "job",
                env={"HYRAX_IMPORTS": "hyraxlike.data"},
            )
        )
        assert "_target_: hyraxlike.models.ImageCNN" in shown.stdout, spelling
        assert "output_classes: 3" in shown.stdout, "the package's [model.ImageCNN] defaults came along"


def test_python_config_file_and_set_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.toml").write_text(HYRAX_TOML)
    h = Hyrax(config_file=tmp_path / "cfg.toml")
    assert h.config["model"]["_target_"].endswith("ImageCNN") and h.config["optimizer"]["lr"] == 0.05
    h.set_config("model.ImageCNN.output_classes", 5)
    h.set_config("'torch.optim.SGD'", {"lr": 0.2})
    h.set_config("mlflow.enabled", False)
    config, given = h._session.final_config()
    assert config["model"]["ImageCNN"]["output_classes"] == 5 and config["optimizer"]["lr"] == 0.2
    assert "model.ImageCNN.output_classes" in given


def test_set_config_data_request_chooses_the_data_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = Hyrax(overrides=["mlflow.enabled=false", "train.epochs=1"])
    h.set_config("model.name", "ImageCNN")
    h.set_config(
        "data_request",
        {
            "train": {
                "data": {
                    "dataset_class": "SurveyData",
                    "data_location": "/fake",
                    "fields": ["image", "label", "object_id"],
                    "primary_id_field": "object_id",
                    "dataset_config": {"n_objects": 24},
                }
            }
        },
    )
    assert h.config["data_set"]["_target_"].endswith("SurveyData")
    assert h.config["data_set"]["fields"] == ["image", "label", "object_id"]
    ds = h.prepare()
    assert len(ds) == 24
    with pytest.raises(HyraxError, match="several data set classes"):
        h.set_config(
            "data_request",
            {
                "train": {"a": {"dataset_class": "SurveyData"}},
                "infer": {"b": {"dataset_class": "RandomImages"}},
            },
        )


def test_package_defaults_make_class_tables_overridable_without_plus(hyrax_run, tmp_path):
    h = Hyrax(overrides=["model=hyraxlike.models.ImageCNN", "model.ImageCNN.output_classes=7"])
    assert h.config["model"]["ImageCNN"] == {"output_classes": 7}


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unknown_toml_table_names_the_closest(hyrax_run, tmp_path):
    (tmp_path / "bad.toml").write_text(HYRAX_TOML + "\n[trian]\nepochs = 3\n")
    err = user_error(hyrax_run("--config-file", "bad.toml"), "unknown table [trian]", "Did you mean [train]?")
    assert err.count("Error") == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists(), "nothing ran"


@pytest.mark.slow
def test_unknown_name_is_reported(hyrax_run, tmp_path):
    user_error(
        hyrax_run("model.name=ImageCMN", "--cfg", "job", env={"HYRAX_IMPORTS": "hyraxlike.models"}),
        "cannot find model 'ImageCMN'",
        "ImageCNN",
    )


def test_unknown_name_is_reported_through_the_api():
    with pytest.raises(HyraxError, match="cannot find data_set 'RandomImagez'") as caught:
        Hyrax().config["data_set"]["name"] = "RandomImagez"
    assert caught.value.key.startswith("data_set"), caught.value.render()


@pytest.mark.slow
def test_a_key_nothing_reads_is_an_error_and_the_run_is_failed(hyrax_run, tmp_path):
    err = user_error(
        hyrax_run("+model.hiden=3", "train.epochs=1"), "'model.hiden' was set", "Did you mean model.hidden?"
    )
    assert "Error in model.hiden" in err
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED" and "model.hiden" in run.data.tags["hyrax.error"]


def test_keys_nothing_reads_through_the_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = Hyrax(overrides=["mlflow.enabled=false", "train.epochs=1"])
    h.config["model"]["name"] = "ImageCNN"
    h.config["data_set"]["name"] = "RandomImages"
    h.config["data_set"]["RandomImages"]["sise"] = 10
    with pytest.raises(HyraxError, match="'data_set.RandomImages.sise' was set"):
        h.train()
    del h.config["data_set"]["RandomImages"]["sise"]
    h.config["train"]["epoch"] = 3
    with pytest.raises(HyraxError, match="Did you mean train.epochs"):
        h.train()
    del h.config["train"]["epoch"]
    h.config["trian"] = {"epochs": 3}
    with pytest.raises(HyraxError, match="'trian' is not a section of the config"):
        h.train()


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        3,
        -2.5e-7,
        "a b'c\\d",
        "end\\",
        "${x}",
        [1, "two", [3.0]],
        {"a": 1, "b": [True, None]},
        "null",
        "1e-3",
    ],
)
def test_rendered_values_parse_back_to_themselves(value):
    [parsed] = OverridesParser.create().parse_overrides([f"++k={render(value)}"])
    got = parsed.value()
    assert got == value or (value == "${x}" and got == "${x}")


@pytest.mark.slow
def test_hyrax_data_set_keys_on_the_command_line_need_no_plus(hyrax_run, tmp_path):
    shown = ok(
        hyrax_run(
            "model=hyraxlike.models.ImageCNN",
            "data_set=hyraxlike.data.SurveyData",
            "data_set.fields=[image,label]",
            "data_set.train_size=0.6",
            "data_set.seed=3",
            "data_set.primary_id_field=object_id",
            "--cfg",
            "job",
        )
    )
    for line in ("- image", "train_size: 0.6", "seed: 3", "primary_id_field: object_id"):
        assert line in shown.stdout, line
