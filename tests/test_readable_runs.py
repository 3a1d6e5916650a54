"""Runs you can read in the MLflow UI: names, parameters, descriptions, the sweep's parent and its best
trial, provenance, system metrics, the data set input and TensorBoard, read back from real stores."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest
from hyraxtest import hyrax_env, metric_history, mlflow_runs, ok, parent_and_children, run_hyrax

from hyrax import tags
from hyrax.run_names import child_run_name, compact, short_value, single_run_name
from hyrax.search.html_report import REPORT_FILE
from hyrax.sweep_summary import TRIALS_FILE

SMALL = ["data_set.n_samples=240", "train.batch_size=32", "train.log_every_n_steps=2"]
METRIC_AXIS = '"yaxis":{"title":{"text":"val\\u002floss"}'  # a plot's value axis, named by the metric
PLUMBING = ("mlflow.", "trial.", "hydra.", "general.", "export.", "verb", "from_run", "ckpt_path")


def _client(cwd: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")


def _artifacts(cwd: Path, run_id: str, path: str = "") -> set[str]:
    client = _client(cwd)
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(cwd, run_id, item.path) if item.is_dir else {item.path}
    return found


def _read_artifact(cwd: Path, run_id: str, path: str) -> str:
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, tracking_uri=f"sqlite:///{cwd}/mlflow.db"
    )
    return Path(local).read_text()


def _git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.org"]
    return subprocess.run(
        ["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_names_round_numbers_and_say_what_varies() -> None:
    assert short_value("0.004412") == "4.4e-3"
    assert short_value("0.25") == "0.25"
    assert short_value("0.00044") == "4.4e-4"
    assert short_value("16") == "16"
    assert short_value("cnn") == "cnn"
    assert (
        compact(["optimizer.lr=0.004412", "model.hidden=16", "mlflow.experiment=x"]) == "lr=4.4e-3 hidden=16"
    )
    assert compact(["optimizer.lr=1", "scheduler.lr=2"]) == "optimizer.lr=1 scheduler.lr=2"
    assert (
        child_run_name("demo", 7, ["optimizer.lr=0.00044", "model.hidden=16"])
        == "demo #7 lr=4.4e-4 hidden=16"
    )
    name = single_run_name({"model": {"_target_": "pkg.MyNet"}}, ["model=pkg.MyNet", "optimizer.lr=0.1"])
    assert name.startswith("MyNet optimizer.lr=0.1 ")


@pytest.mark.slow
def test_a_single_run_reads_well_and_records_where_it_came_from(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "notes.txt").write_text("first\n")
    _git(tmp_path, "add", "notes.txt")
    _git(tmp_path, "commit", "-q", "-m", "start")
    (tmp_path / "notes.txt").write_text("first\nchanged after the commit\n")
    env = hyrax_env({"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
    proc = ok(
        run_hyrax([*SMALL, "model.hidden=8", "optimizer.lr=0.003", "train.epochs=3"], tmp_path, env=env)
    )

    (run,) = mlflow_runs(tmp_path)
    data = run.data
    assert run.info.run_name.startswith("MLP ")
    assert "optimizer.lr=0.003 train.epochs=3" in run.info.run_name
    assert not any(k.startswith(PLUMBING) for k in data.params), sorted(data.params)
    assert data.params["optimizer.lr"] == "0.003" and data.params["model.hidden"] == "8"
    assert {k.split(".")[0] for k in data.params} == {
        "model",
        "data_set",
        "criterion",
        "optimizer",
        "scheduler",
        "train",
    }
    assert tags.OVERRIDES not in data.tags
    assert data.tags[tags.RUN_DIR].startswith(str(tmp_path))
    note = data.tags[tags.NOTE]
    assert "hyrax-run data_set.n_samples=240" in note and "optimizer.lr=0.003" in note
    assert "**Result:** objective" in note and "of 3" in note
    assert data.tags[tags.OBJECTIVE_METRIC] == "val/loss"
    assert data.tags[tags.OBJECTIVE_DIRECTION] == "minimize"
    # epoch with each epoch's metrics; best_epoch says which one the objective is from
    assert metric_history(tmp_path, run.info.run_id, "epoch") == [1.0, 2.0, 3.0]
    best_epoch = int(data.metrics["best_epoch"])
    val = metric_history(tmp_path, run.info.run_id, "val/loss")
    assert data.metrics["objective"] == pytest.approx(val[best_epoch - 1])
    steps = metric_history(tmp_path, run.info.run_id, "train/loss_step")
    assert len(steps) >= 6 and steps[-1] < steps[0]
    # provenance
    assert data.tags[tags.GIT_COMMIT] == _git(tmp_path, "rev-parse", "HEAD")
    assert data.tags[tags.GIT_BRANCH] == "main"
    assert data.tags[tags.GIT_DIRTY] == "true"
    assert data.tags[tags.SOURCE_TYPE] == "LOCAL" and data.tags[tags.USER]
    assert data.tags[tags.TORCH_VERSION] and data.tags[tags.PYTHON_VERSION] and data.tags[tags.HOST]
    files = _artifacts(tmp_path, run.info.run_id)
    assert {
        "config/config.yaml",
        "config/overrides.yaml",
        tags.REQUIREMENTS_FILE,
        tags.GIT_DIFF_FILE,
    } <= files
    assert "+changed after the commit" in _read_artifact(tmp_path, run.info.run_id, tags.GIT_DIFF_FILE)
    assert "torch==" in _read_artifact(tmp_path, run.info.run_id, tags.REQUIREMENTS_FILE)
    # system metrics, the data set input
    assert any(k.startswith("system/cpu_utilization") for k in data.metrics), sorted(data.metrics)
    assert any(k.startswith("system/system_memory") for k in data.metrics)
    full = _client(tmp_path).get_run(run.info.run_id)
    (dataset,) = full.inputs.dataset_inputs
    assert dataset.dataset.name.endswith("SyntheticClassification") and dataset.dataset.digest
    # the log ends with where to look
    tail = proc.stdout.strip().splitlines()[-3:]  # Hydra logs to stdout
    assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in tail[0]
    assert tail[1].endswith(f"#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning")
    assert "mlflow ui --backend-store-uri sqlite:///" in tail[2]
    # TensorBoard holds the same metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(data.tags[tags.RUN_DIR]) / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/loss", "lr"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx(val)


@pytest.mark.slow
def test_a_clean_checkout_records_no_diff_and_tensorboard_and_system_metrics_switch_off(
    tmp_path: Path,
) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\nmlflow.db\nmlartifacts/\n")
    _git(tmp_path, "add", ".gitignore")
    _git(tmp_path, "commit", "-q", "-m", "start")
    ok(
        run_hyrax(
            [*SMALL, "train.epochs=1", "train.tensorboard=false", "mlflow.system_metrics=false"], tmp_path
        )
    )
    (run,) = mlflow_runs(tmp_path)
    assert run.data.tags[tags.GIT_DIRTY] == "false"
    assert tags.GIT_DIFF_FILE not in _artifacts(tmp_path, run.info.run_id)
    assert not any(k.startswith("system/") for k in run.data.metrics)
    assert not (Path(run.data.tags[tags.RUN_DIR]) / "tensorboard").exists()


@pytest.mark.slow
def test_a_grid_parent_has_its_space_best_trial_table_and_artifacts(tmp_path: Path) -> None:
    args = ["-m", *SMALL, "train.epochs=2", "optimizer.lr=0.001,0.03", "model.depth=1,2"]
    ok(run_hyrax(args, tmp_path))
    (parent,), children = parent_and_children(mlflow_runs(tmp_path))
    assert len(children) == 4
    params = parent.data.params
    assert params["space.optimizer.lr"] == "grid(0.001, 0.03)" and params["space.model.depth"] == "grid(1, 2)"
    assert params["sampler"] == "grid" and params["n_trials"] == "4"
    assert params["direction"] == "minimize" and params["objective.metric"] == "val/loss"
    assert parent.info.run_name.startswith("grid ")
    names = sorted(c.info.run_name for c in children)
    assert names == ["grid #0 lr=1e-3 depth=1", "grid #1 lr=1e-3 depth=2", "grid #2 lr=0.03 depth=1",
                     "grid #3 lr=0.03 depth=2"]  # fmt: skip
    best = min(children, key=lambda c: c.data.metrics["objective"])
    assert [c.info.run_id for c in children if c.data.tags.get(tags.BEST) == "true"] == [best.info.run_id]
    assert parent.data.params["best.optimizer.lr"] == best.data.params["optimizer.lr"]
    assert parent.data.params["best.model.depth"] == best.data.params["model.depth"]
    assert parent.data.metrics["best.val/loss"] == best.data.metrics["val/loss"]
    assert parent.data.metrics["best.objective"] == best.data.metrics["objective"]
    note = parent.data.tags[tags.NOTE]
    assert "hyrax-run -m" in note and f"runs/{best.info.run_id})" in note
    ranked = sorted(children, key=lambda c: c.data.metrics["objective"])
    positions = [note.index(f"[{c.info.run_name}]") for c in ranked]
    assert positions[1:] and positions[1] > positions[0] and positions == sorted(positions)
    files = _artifacts(tmp_path, parent.info.run_id)
    assert {TRIALS_FILE, REPORT_FILE} <= files
    rows = list(csv.DictReader(io.StringIO(_read_artifact(tmp_path, parent.info.run_id, TRIALS_FILE))))
    assert len(rows) == 4 and rows[0]["run_id"] == best.info.run_id
    assert {"optimizer.lr", "model.depth", "val/loss", "objective"} <= set(rows[0])
    report = _read_artifact(tmp_path, parent.info.run_id, REPORT_FILE)
    assert "plotly" in report and METRIC_AXIS in report


@pytest.mark.slow
def test_an_optuna_parent_records_its_search_space_sampler_and_named_trials(tmp_path: Path) -> None:
    args = ["-m", "sweep=demo", *SMALL, "hydra.sweeper.n_trials=3", "train.epochs=1"]
    ok(run_hyrax(args, tmp_path))
    (parent,), children = parent_and_children(mlflow_runs(tmp_path))
    params = parent.data.params
    assert params["space.optimizer.lr"] == "float [0.0001, 0.1] log"
    assert params["space.model.hidden"] == "choice(16, 64)"
    assert params["sampler"] == "TPESampler" and params["sampler.seed"] == "0"
    assert params["pruner"] == "none" and params["n_trials"] == "3"
    assert params["direction"] == "minimize" and params["objective.metric"] == "val/loss"
    assert parent.info.run_name.startswith("demo ")
    for child in children:
        number = child.data.tags[tags.TRIAL_NUMBER]
        lr = float(child.data.params["optimizer.lr"])
        assert (
            child.info.run_name
            == f"demo #{number} lr={short_value(str(lr))} hidden={child.data.params['model.hidden']}"
        )
        assert not any(k.startswith(PLUMBING) for k in child.data.params)
        assert tags.REQUIREMENTS_FILE not in _artifacts(tmp_path, child.info.run_id)  # once, on the parent
    assert tags.REQUIREMENTS_FILE in _artifacts(tmp_path, parent.info.run_id)
    assert {TRIALS_FILE, REPORT_FILE} <= _artifacts(tmp_path, parent.info.run_id)
    assert METRIC_AXIS in _read_artifact(tmp_path, parent.info.run_id, REPORT_FILE)
    assert sum(c.data.tags.get(tags.BEST) == "true" for c in children) == 1
    assert "best.optimizer.lr" in params


def test_the_step_loss_is_a_moving_average_that_starts_at_the_first_loss_and_carries_on() -> None:
    import torch

    from hyrax.errors import NonFiniteLossError
    from hyrax.train.distributed import SINGLE
    from hyrax.train.steps import LossMeter

    meter = LossMeter(SINGLE, 3)
    averages = []
    for step, value in enumerate((4.0, 2.0, 2.0), start=1):
        meter.add(torch.tensor(value), {}, step)
        averages.append(meter.read(0))
    assert averages == [4.0, 3.0, 2.5]  # weight 2/(3+1)
    resumed = LossMeter(SINGLE, 3, meter.average)  # a checkpoint's state continues the average
    resumed.add(torch.tensor(2.0), {}, 4)
    assert resumed.read(0) == 2.25
    # losses wait on the device until read; the read finds the first bad step among them
    late = LossMeter(SINGLE, 3)
    for step, value in enumerate((1.0, float("nan"), 1.0), start=7):
        late.add(torch.tensor(value), {}, step)
    with pytest.raises(NonFiniteLossError, match="became nan at epoch 2, step 8"):
        late.read(1)
