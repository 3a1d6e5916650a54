"""Building a user's model and calling it the way the Hyrax model contract describes.

Current Hyrax releases renamed some methods; both spellings work: `train_step`/`train_batch`,
`validate_step`/`validate_batch`, `test_step`/`test_batch`, `to_tensor`/`prepare_inputs`, and
`infer_batch` for inference. A model with its own training step receives every batch exactly as
`to_tensor` made it (a tuple stays a tuple), in `forward` too; the default step splits `(x, y)`.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from hyrax.errors import HyraxError

TRAIN_STEP_NAMES = ("train_step", "train_batch")
TO_TENSOR_NAMES = ("to_tensor", "prepare_inputs")
INFER_NAMES = ("infer_batch",)
VALIDATE_NAMES = ("validate_step", "validate_batch")
TEST_NAMES = ("test_step", "test_batch", *VALIDATE_NAMES)

# Models whose forward turned out to take only the inputs of an (x, y) batch (see `learn_forward`).
_INPUTS_ONLY: weakref.WeakSet[nn.Module] = weakref.WeakSet()
# Models with their own step whose output the criterion cannot judge against the labels (see
# `learn_criterion_fit`): validation without a validate step measures nothing for them.
_CRITERION_MISFITS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def find_method(obj: Any, names: tuple[str, ...]) -> Callable[..., Any] | None:
    """The first of `names` that `obj` (a model or model class) defines itself, not nn.Module."""
    for name in names:
        method = getattr(obj, name, None)
        if callable(method) and not hasattr(nn.Module, name):
            return method
    return None


def has_own_step(model: Any) -> bool:
    """Whether the model (or model class) trains itself with `train_step`/`train_batch`."""
    return find_method(model, TRAIN_STEP_NAMES) is not None


def inputs_and_labels(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """Split a model-ready batch into inputs and labels; None for unlabeled data (or an empty label)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        label = batch[1]
        if isinstance(label, torch.Tensor) and label.numel() == 0:
            return batch[0], None
        return batch[0], label
    return batch, None


def batch_length(batch: Any) -> int:
    """How many items a model-ready batch holds: the first axis of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, (tuple, list)) and batch:
        return batch_length(batch[0])
    if isinstance(batch, Mapping) and batch:
        return batch_length(next(iter(batch.values())))
    return len(batch) if hasattr(batch, "__len__") else 1


def forward(model: nn.Module, batch: Any) -> Any:
    """Call `forward` as the contract says: the whole batch for models with their own step."""
    if has_own_step(model) and model not in _INPUTS_ONLY:
        return model(batch)
    return model(inputs_and_labels(batch)[0])


def learn_forward(model: nn.Module, batch: Any) -> Any:
    """Run forward once on a sample batch; a model with its own step whose forward fails on the whole
    `(x, y)` batch but takes `x` is remembered as taking only inputs. Returns the output."""
    if not has_own_step(model):
        return model(inputs_and_labels(batch)[0])
    try:
        return model(batch)
    except (RuntimeError, ValueError, IndexError, TypeError, AttributeError) as whole_failed:
        x, y = inputs_and_labels(batch)
        if y is None:
            raise
        try:
            output = model(x)
        except Exception:
            raise whole_failed from None
        _INPUTS_ONLY.add(model)
        return output


def learn_criterion_fit(model: nn.Module, output: Any, labels: Any) -> None:
    """For a model with its own step: remember whether `criterion(output, labels)` works, which decides
    whether validation without a validate step can fall back to the criterion (a loopback model's
    output is its input: no criterion judges that against class labels)."""
    criterion = getattr(model, "criterion", None)
    if labels is None or criterion is None or not isinstance(output, torch.Tensor):
        return
    try:
        with torch.no_grad():
            criterion(output, labels)
    except (RuntimeError, ValueError, IndexError, TypeError):
        _CRITERION_MISFITS.add(model)


def default_metrics_apply(model: nn.Module) -> bool:
    """Whether validation may judge the model's output with its criterion (see `learn_criterion_fit`)."""
    return model not in _CRITERION_MISFITS


def constructor_kwargs(cls: type, params: Mapping[str, Any], injected: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments to call `cls` with: injected values its signature names, then config params.

    Config keys the constructor does not name stay in the config for the class to read; a missing
    required value (`???` in the config) is reported as an error naming the key.
    """
    signature = inspect.signature(cls)
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    kwargs = {k: v for k, v in injected.items() if k in signature.parameters}
    for key, value in params.items():
        if key in signature.parameters or accepts_any:
            kwargs.setdefault(key, value)
    return kwargs


def check_required(group: str, params: Mapping[str, Any]) -> None:
    """Fail with the key and the fix when a required constructor parameter was never given."""
    missing = [k for k, v in params.items() if v == "???"]
    if missing:
        key = f"{group}.{missing[0]}"
        raise HyraxError(
            f"required parameter '{missing[0]}' has no value",
            key=key,
            fix=f"add {key}=VALUE to the command line (or to your {group} config)",
        )


_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str}


def check_types(group: str, cls: type, params: Mapping[str, Any]) -> None:
    """Fail with the key when a value cannot be what the constructor's annotation or default says.

    Component configs are open mappings, so Hydra cannot type-check them; the signature can.
    """
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    for name, value in params.items():
        parameter = signature.parameters.get(name)
        expected = _expected_type(parameter) if parameter is not None else None
        if expected is not None and value is not None and value != "???" and not _fits(value, expected):
            kind = "a number" if expected is float else f"a value of type {expected.__name__}"
            raise HyraxError(
                f"{cls.__qualname__} takes {kind} for '{name}', not {value!r}",
                key=f"{group}.{name}",
                fix=f"give {group}.{name} {kind}",
            )


def _expected_type(parameter: inspect.Parameter) -> type | None:
    annotation = parameter.annotation
    if isinstance(annotation, str):  # "int", or "str | None" (None is let through before this)
        kinds = [a.strip() for a in annotation.split("|") if a.strip() != "None"]
        annotation = _SIMPLE.get(kinds[0]) if len(kinds) == 1 else None
    if annotation in _SIMPLE.values():
        return annotation
    default = parameter.default  # unannotated: a numeric default says "a number", not which kind
    if isinstance(default, bool):
        return bool
    return float if type(default) in (int, float) else None


def _fits(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def build_model(
    cls: type,
    params: Mapping[str, Any],
    config: Mapping[str, Any],
    data_sample: Any,
    shape: tuple[int, ...] | None,
) -> nn.Module:
    """Construct a model from its config, passing `config`, `data_sample` or `shape` when asked for.

    `config` is the read-only view the caller made (it records what the model reads).
    """
    check_required("model", params)
    check_types("model", cls, params)
    injected = {"config": config, "data_sample": data_sample, "shape": shape}
    model = cls(**constructor_kwargs(cls, params, injected))
    if not isinstance(model, nn.Module):
        raise HyraxError(
            f"{cls.__qualname__} is not a torch.nn.Module",
            key="model",
            fix="subclass torch.nn.Module in your model class",
        )
    return model


def loss_value(result: Any, model: nn.Module) -> torch.Tensor | float:
    """The `"loss"` of a train_step result: a tensor, a float or a per-item list (averaged)."""
    if not isinstance(result, Mapping) or "loss" not in result:
        name = type(model).__qualname__
        raise HyraxError(
            f"{name}.train_step returned {type(result).__name__} without a 'loss' key",
            key="model",
            fix=f"return a dict like {{'loss': loss}} from {name}.train_step",
        )
    loss = result["loss"]
    if isinstance(loss, (list, tuple)):
        values = [
            v.detach().float().mean() if isinstance(v, torch.Tensor) else torch.tensor(float(v)) for v in loss
        ]
        return torch.stack(values).mean() if values else torch.tensor(float("nan"))
    if isinstance(loss, torch.Tensor):
        return loss.detach().float().mean()
    return loss
