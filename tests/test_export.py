"""`verb=export`: a trained checkpoint's `forward` as an ONNX file that onnxruntime runs like torch, for
any batch size; `to_tensor` stays out of the graph; a model the exporter refuses is one message naming
the submodule and op, exit 2.

Every test that exports takes seconds (torch.export, then onnxruntime), so only the argument checks
run in the fast tier."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hyraxtest import ok, run_hyrax, user_error
from torch import nn

from hyrax import Hyrax
from hyrax.api import as_plain, run_verb
from hyrax.errors import HyraxError
from hyrax.train import checkpoint, verbs
from hyrax.train.export import ExportResult, check_onnx

SMALL = ("data_set.n_samples=300", "train.batch_size=32")
MLP = (*SMALL, "model.dropout=0.3")  # dropout: the export must run the model in eval mode


class Gate(nn.Module):
    """Decides in Python on a tensor's value: nothing a graph can hold."""

    def forward(self, x):
        if x.mean().item() > 0:
            return x * 2
        return x - 1


class RunningMax(nn.Module):
    """An op without an ONNX translation."""

    def forward(self, x):
        return torch.cummax(x, 1).values


class BranchyNet(nn.Module):
    """Trains fine; its `body.1` is what the exporter refuses."""

    def __init__(self, config, data_sample, kind: str = "gate"):
        super().__init__()
        x, _ = data_sample
        self.body = nn.Sequential(nn.Linear(x.shape[0], 8), Gate() if kind == "gate" else RunningMax())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def trained(workdir):
    """`trained(*overrides)`: a session and the run directory of one epoch trained with them (cached)."""
    done: dict[tuple[str, ...], tuple[Hyrax, Path]] = {}

    def train(*overrides: str) -> tuple[Hyrax, Path]:
        if overrides not in done:
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(workdir)
                mp.delenv("MLFLOW_TRACKING_URI", raising=False)
                h = Hyrax(overrides=["train.epochs=1", "mlflow.enabled=false", *overrides])
                h.train()
            done[overrides] = (h, h.last_run_dir)
        return done[overrides]

    return train


def export(h: Hyrax, run_dir: Path, **settings) -> ExportResult:
    """`verb=export` of a run, in this process."""
    config = as_plain(h.config)
    config.update(verb="export", ckpt_path=str(run_dir))
    config["export"].update(settings)
    return run_verb(config, run_dir.parent / "export_job", run_dir.parent)


def best_model(h: Hyrax, run_dir: Path) -> nn.Module:
    """The configured model with the run's best weights, built here (not by the verb), in eval mode."""
    from hyrax.train.components import assemble, pick_device

    _, model = assemble(as_plain(h.config), pick_device("cpu"))
    model.load_state_dict(checkpoint.load(run_dir / "checkpoints" / "best.pt")["model"])
    return model.eval()


def session_of(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def largest_difference(path: Path, model: nn.Module, *inputs: np.ndarray) -> float:
    """onnxruntime's output against torch's on the same inputs."""
    session = session_of(path)
    feed = dict(zip([i.name for i in session.get_inputs()], inputs, strict=True))
    [got] = session.run(None, feed)
    with torch.no_grad():
        want = model(*[torch.from_numpy(a) for a in inputs]).numpy()
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


@pytest.mark.slow
def test_onnx_file_matches_torch_for_any_batch_size(trained, capsys):
    h, run_dir = trained(*MLP)
    result = export(h, run_dir)
    assert result.path == run_dir / "model.onnx" and result.path.is_file()
    assert result.max_difference <= 1e-4 and result.batch_sizes == (8, 4) and result.dynamic_batch
    printed = capsys.readouterr().out
    assert (
        f"Wrote {result.path.resolve()} (opset {result.opset}); onnxruntime matches torch within" in printed
    )
    assert "on 12 samples (batches of 8 and 4)" in printed

    session = session_of(result.path)
    [given], [out] = session.get_inputs(), session.get_outputs()
    assert (given.name, out.name) == ("input", "output")
    assert isinstance(given.shape[0], str) and given.shape[1:] == [20], "a dynamic batch axis"
    model = best_model(h, run_dir)
    rng = np.random.default_rng(0)
    for n in (5, 1, 64):
        x = (3 * rng.normal(size=(n, 20))).astype(np.float32)
        assert largest_difference(result.path, model, x) < 1e-4, n

    with torch.no_grad():  # a model that no longer matches the file fails the check, naming the key
        next(model.parameters()).add_(0.01)
    with pytest.raises(HyraxError, match="more than export.tolerance=0.0001") as failed:
        check_onnx(result.path, model, (torch.from_numpy(x),), 1e-4)
    assert failed.value.key == "export.tolerance"


@pytest.mark.slow
def test_to_tensor_stays_out_of_the_graph(trained, tmp_path):
    """Seed 001's model: dict items of named fluxes, packed by `to_tensor`; the file takes its tensor."""
    from hyraxlike.data import FluxData
    from hyraxlike.models import SeedAutoencoder

    h, run_dir = trained("model=hyraxlike.models.SeedAutoencoder", "data_set=hyraxlike.data.FluxData")
    result = export(h, run_dir, path=str(tmp_path / "flux.onnx"))
    assert result.path == tmp_path / "flux.onnx" and result.max_difference <= 1e-4
    [given] = session_of(result.path).get_inputs()
    assert given.name == "input" and given.type == "tensor(float)" and given.shape[1:] == [6]

    items = [FluxData(None)[i] for i in range(10)]  # packed here, outside the graph, as a user would
    fields = {k: np.stack([item[k] for item in items]) for k in ("flux_g", "flux_r")}
    x = SeedAutoencoder.to_tensor({"data": fields, "object_id": [item["object_id"] for item in items]})
    assert largest_difference(result.path, best_model(h, run_dir), x) < 1e-4


@pytest.mark.slow
def test_forward_taking_the_whole_batch_gets_inputs_in_order(trained, tmp_path):
    """Hyrax's CNN: `to_tensor` gives (images, labels) and its forward unpacks the tuple itself."""
    h, run_dir = trained("model=hyraxlike.models.ImageCNN", "data_set=hyraxlike.data.RandomImages")
    result = export(h, run_dir, path=str(tmp_path / "cnn.onnx"))
    session = session_of(result.path)
    assert [i.name for i in session.get_inputs()] == ["input_0", "input_1"]
    images = np.random.default_rng(1).random((3, 2, 8, 8), dtype=np.float32)
    labels = np.zeros(3, dtype=np.int64)
    [got] = session.run(None, {"input_0": images, "input_1": labels})
    with torch.no_grad():
        want = best_model(h, run_dir)((torch.from_numpy(images), torch.from_numpy(labels))).numpy()
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("gate", ["in body.1 (Gate)", "test_export.py", "x.mean().item() > 0", "data-dependent"]),
        ("cummax", ["op aten.cummax in body.1 (RunningMax)", "torch.cummax(x, 1)"]),
    ],
)
def test_unexportable_submodule_is_named(trained, tmp_path, kind, named):
    h, run_dir = trained(*SMALL, "model=test_export.BranchyNet", f"model.kind={kind}")
    with pytest.raises(HyraxError) as failed:
        export(h, run_dir, path=str(tmp_path / "bad.onnx"))
    error = failed.value
    assert error.key == "model" and error.message.startswith("BranchyNet cannot be exported to ONNX: ")
    for needle in named:
        assert needle in error.message, error.message
    assert "body.1 (" in error.fix and ("torch.where" in error.fix or "ONNX translation" in error.fix)
    assert len(error.render().splitlines()) == 2, "one message and one fix, no exporter dump"


def test_unknown_format_and_missing_onnx_packages(monkeypatch):
    config = as_plain(Hyrax(overrides=["mlflow.enabled=false"]).config)
    config.update(ckpt_path="nowhere")  # never read: both are reported before the checkpoint
    config["export"]["format"] = "tflite"
    with pytest.raises(HyraxError, match="unknown export format 'tflite'") as failed:
        verbs.export(config, Path("."))
    assert failed.value.key == "export.format" and "onnx" in failed.value.fix
    config["export"]["format"] = "onnx"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it now fails
    with pytest.raises(HyraxError, match="'onnxruntime' package") as failed:
        verbs.export(config, Path("."))
    assert "pip install 'hyrax-runner[onnx]'" in failed.value.fix


def test_export_settings_with_another_verb_are_refused_not_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = Hyrax(overrides=["mlflow.enabled=false", "export.tolerance=1e-6"])
    with pytest.raises(HyraxError, match="only verb=export reads the export settings") as failed:
        h.train()
    assert failed.value.key == "export.tolerance" and "verb=export" in failed.value.fix


@pytest.mark.slow
def test_hyrax_run_export_end_to_end(trained, workdir):
    h, run_dir = trained(*MLP)
    target = workdir / "cli" / "model.onnx"
    proc = ok(run_hyrax(["verb=export", f"ckpt_path={run_dir}", *MLP, f"export.path={target}"], workdir))
    assert f"Using checkpoint {run_dir.resolve() / 'checkpoints' / 'best.pt'}" in proc.stdout
    assert f"Wrote {target}" in proc.stdout and "onnxruntime matches torch within" in proc.stdout
    assert "[torch.onnx]" not in proc.stdout + proc.stderr, "the exporter's progress lines are kept out"
    x = np.random.default_rng(7).normal(size=(7, 20)).astype(np.float32)
    assert largest_difference(target, best_model(h, run_dir), x) < 1e-4


@pytest.mark.slow
def test_hyrax_run_export_errors_exit_2(trained, workdir):
    _, run_dir = trained(*SMALL, "model=test_export.BranchyNet", "model.kind=gate")
    args = ["verb=export", f"ckpt_path={run_dir}", *SMALL, "model=test_export.BranchyNet"]
    stderr = user_error(run_hyrax(args, workdir), "Error in model:", "in body.1 (Gate)", "Fix: in body.1")
    assert "def forward(self, arg0_1" not in stderr, "torch.export's graph dump is kept out"
    user_error(run_hyrax([*args, "export.format=tflite"], workdir), "Error in export.format:", "tflite")
