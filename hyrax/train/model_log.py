"""A run's model as an MLflow PyTorch model (`mlflow.log_model`), and a registered version of it
(`mlflow.register_model=NAME`).

Hyrax talks to MLflow through an `MlflowClient` for one store, never the fluent API or the
process-wide tracking URI (a worker process runs jobs against different stores), so this does by
hand what `mlflow.pytorch.log_model` does in MLflow 3: it creates a LoggedModel named `model` whose
source is the run, saves the model into a temporary folder with `mlflow.pytorch.save_model`, uploads
that folder as the LoggedModel's artifacts, records the model as an output of the run, and marks it
READY. `models:/<model id>` and `runs:/<run id>/model` both load it with
`mlflow.pytorch.load_model`.

What is saved is `forward` on what `to_tensor` produced (as `verb=export` exports it): the model is
called with the tensors of a model-ready batch as positional arguments. By default it is saved as a
`torch.export` program (MLflow's `pt2` format): data, never code, loadable without the model's class
or Hyrax being importable. A model `torch.export` cannot trace (a `forward` that decides in Python on
tensor values) is pickled instead, with a warning: loading it then unpickles (runs) code, needs its
class importable, and is refused where `MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`.
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from hyrax import tags
from hyrax.errors import HyraxError
from hyrax.train.export import first_line, forward_args, io_names, quiet_exporter, tensors, to_cpu

log = logging.getLogger("hyrax")
NAME = "model"  # the LoggedModel's name, hence `runs:/<run id>/model`


class FlatForward(nn.Module):
    """`forward` of a model whose input is nested (a tuple of tensors as one argument, as models with
    their own step take `(x, y)`), taking those tensors as flat positional arguments instead."""

    def __init__(self, model: nn.Module, args: tuple[Any, ...]) -> None:
        super().__init__()
        self.model = model
        leaves, self.spec = pytree.tree_flatten(args)
        self.constants = [None if isinstance(v, torch.Tensor) else v for v in leaves]

    def forward(self, *inputs: torch.Tensor) -> Any:
        feed = iter(inputs)
        leaves = [next(feed) if c is None else c for c in self.constants]
        return self.model(*pytree.tree_unflatten(leaves, self.spec))


def flat_forward(model: nn.Module, args: tuple[Any, ...]) -> FlatForward:
    """A `FlatForward` whose `forward` declares one parameter per tensor (`input_0`, ...): torch.export
    matches MLflow's per-input dynamic shapes against the declared parameters, not against `*inputs`."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    names = ["self", *io_names("input", len(tensors(args)))]

    def forward(self: FlatForward, *inputs: torch.Tensor) -> Any:
        return FlatForward.forward(self, *inputs)

    signature = inspect.Signature([inspect.Parameter(n, kind) for n in names])
    forward.__signature__ = signature  # type: ignore[attr-defined]
    return type("FlatForward", (FlatForward,), {"forward": forward})(model, args)


def log_model(
    client: Any, run_id: str, model: nn.Module, sample_batch: Any, register_as: str | None = None
) -> str:
    """Log `model` (with the weights to keep) as run `run_id`'s MLflow PyTorch model named `model`;
    with `register_as`, also register it as a new version of that name. Returns the model's URI."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    model = cpu_model(model)
    args = forward_args(model, to_cpu(sample_batch))
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id,
        name=NAME,
        source_run_id=run_id,
        tags={tags.MODEL: f"{type(model).__module__}.{type(model).__qualname__}"},
        params=dict(run.data.params),
    )
    try:
        with tempfile.TemporaryDirectory(prefix="hyrax-model-") as tmp:
            folder = Path(tmp) / NAME
            save(model, args, folder, mlflow_model(logged, run_id))
            client.log_model_artifacts(logged.model_id, str(folder))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    uri = f"models:/{logged.model_id}"
    if register_as:
        version = register(client, register_as, logged, run_id)
        log.info("registered the model as version %s of '%s'", version, register_as)
    return uri


def cpu_model(model: nn.Module) -> nn.Module:
    """The model to save, in eval mode on the CPU: unwrapped from `torch.compile`, and a copy when its
    weights are elsewhere (the caller's model stays where it is)."""
    model = getattr(model, "_orig_mod", model)
    on_cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    return (model if on_cpu else copy.deepcopy(model).cpu()).eval()


def mlflow_model(logged: Any, run_id: str) -> Any:
    """The MLmodel description of a LoggedModel (what `mlflow.pytorch.log_model` fills in)."""
    from mlflow.models import Model

    return Model(
        artifact_path=logged.artifact_location,
        model_uuid=logged.model_id,
        run_id=run_id,
        model_id=logged.model_id,
    )


def save(model: nn.Module, args: tuple[Any, ...], folder: Path, description: Any) -> None:
    """`mlflow.pytorch.save_model` into `folder`: a `torch.export` program when the model can be
    traced, else pickled (with a warning about what loading it then needs)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    inputs = [t.numpy() for t in tensors(args)]
    with torch.no_grad():
        outputs = [t.numpy() for t in tensors(model(*args))]
    signature = infer_signature(_named("input", inputs), _named("output", outputs))
    flat = all(isinstance(a, torch.Tensor) for a in args)
    try:
        with quiet_exporter():
            mlflow.pytorch.save_model(
                model if flat else flat_forward(model, args),
                str(folder),
                mlflow_model=copy.deepcopy(description),
                signature=signature,
                input_example=inputs[0] if len(inputs) == 1 else tuple(inputs),
                pip_requirements=requirements(pickled=False),
                serialization_format="pt2",
            )
        return
    except Exception as err:
        reason = first_line(_innermost(err))
    check_unpickles(model, reason)
    log.warning(
        "mlflow.log_model: torch.export cannot trace %s (%s), so it is logged pickled: loading it "
        "needs its class importable, and is refused where MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false",
        type(model).__qualname__,
        reason,
    )
    shutil.rmtree(folder, ignore_errors=True)  # what the failed save left
    mlflow.pytorch.save_model(
        model,
        str(folder),
        mlflow_model=description,
        signature=signature,
        input_example=_named("input", inputs),
        pip_requirements=requirements(pickled=True),
        serialization_format="pickle",
    )


def requirements(pickled: bool) -> list[str]:
    """What loading the model needs: torch (without a local label such as +cpu), and cloudpickle for a
    pickled model (whose own package must be installed too)."""
    from importlib.metadata import version

    torch_version = torch.__version__.split("+")[0]
    return [f"torch=={torch_version}", *([f"cloudpickle=={version('cloudpickle')}"] if pickled else [])]


def check_unpickles(model: nn.Module, reason: str) -> None:
    """Fail, naming both reasons, when the model cannot be pickled and loaded again (it holds a lock,
    an open file, a client, or anything else pickle cannot carry)."""
    import mlflow.pytorch

    buffer = io.BytesIO()
    try:
        torch.save(model, buffer, pickle_module=mlflow.pytorch.pickle_module)
        buffer.seek(0)
        torch.load(buffer, weights_only=False, pickle_module=mlflow.pytorch.pickle_module)
    except Exception as err:
        raise HyraxError(
            f"{type(model).__qualname__} can be logged neither as a torch.export program ({reason}) "
            f"nor pickled ({type(err).__name__}: {first_line(err)})",
            key="mlflow.log_model",
            fix="make forward traceable by torch.export (no Python decisions on tensor values), or keep "
            "what pickle cannot carry (locks, open files, clients) out of the model's attributes",
        ) from err


def _named(prefix: str, arrays: list[np.ndarray]) -> Any:
    """One array as itself, several as a dict named like the ONNX export's inputs/outputs."""
    return arrays[0] if len(arrays) == 1 else dict(zip(io_names(prefix, len(arrays)), arrays, strict=True))


def _innermost(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def register(client: Any, name: str, logged: Any, run_id: str) -> str:
    """A new version of registered model `name` (created when missing) from the logged model.

    The version's source is the LoggedModel's artifact location, not `models:/<model id>`: MLflow's
    SQL registry store resolves such a URI with a client for the process-wide tracking URI, which is
    not the store this client writes to.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException as err:  # another run created it a moment ago
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    version = client.create_model_version(
        name, source=logged.artifact_location, run_id=run_id, model_id=logged.model_id
    )
    return str(version.version)
