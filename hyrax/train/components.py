"""Building the run's parts from config: seeding, device, data set, model, criterion, optimizer, scheduler."""

from __future__ import annotations

import logging
import random
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from hyrax.data_sets.batches import Batches, make_converter, split_indices
from hyrax.errors import HyraxError
from hyrax.models.contract import (
    TO_TENSOR_NAMES,
    build_model,
    check_required,
    check_types,
    constructor_kwargs,
    find_method,
    read_only,
)
from hyrax.resolve import RESERVED_KEYS, locate_target

log = logging.getLogger("hyrax")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if not available.get(name.split(":")[0], False):
        raise HyraxError(f"device '{name}' is not available on this machine", key="train.device",
                         fix="use train.device=auto or train.device=cpu")
    return torch.device(name)


def component_params(node: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a component config: everything but Hyrax's reserved keys."""
    return {k: v for k, v in node.items() if k not in RESERVED_KEYS}


def build_component(group: str, node: Optional[Mapping[str, Any]], config: Mapping[str, Any],
                    **injected: Any) -> Any:
    """Instantiate the class a component config names; None when its `_target_` is null."""
    if not node or node.get("_target_") is None:
        return None
    cls = locate_target(group, node["_target_"])
    params = component_params(node)
    check_required(group, params)
    check_types(group, cls, params)
    injected.setdefault("config", read_only(config))
    try:
        return cls(**constructor_kwargs(cls, params, injected))
    except (TypeError, ValueError) as err:
        # torch's own classes reject bad values this way; in user classes only a signature mismatch
        # is bad input, anything else is a bug to show with its traceback.
        ours = group in ("criterion", "optimizer", "scheduler") or "argument" in str(err)
        if not ours:
            raise
        raise HyraxError(f"{cls.__qualname__} rejected its arguments: {err}", key=group,
                         fix=f"check the {group}.* values against {cls.__qualname__}'s parameters") from err


def build_data_set(config: Mapping[str, Any]) -> Any:
    """The data set the config names, built with its constructor parameters and the whole config."""
    return build_component("data_set", config["data_set"], config)


@dataclass
class DataParts:
    """The data side of a run: the data set, its splits as batches, and one model-ready sample."""

    data_set: Any
    batches: dict[str, Batches]
    sample: Any
    split_sizes: dict[str, int]


def prepare_data(config: Mapping[str, Any], data_set: Any, model_cls: type) -> DataParts:
    """Split the data set and make model-ready batches for every split."""
    train = config["train"]
    nan_mode = (config["data_set"] or {}).get("nan_mode")
    fractions = dict(train["split"])
    with_to_tensor = find_method(model_cls, TO_TENSOR_NAMES) is not None
    iterable = isinstance(data_set, torch.utils.data.IterableDataset)
    first = next(iter(data_set)) if iterable else data_set[0]
    convert = make_converter(model_cls, first, nan_mode)
    indices = {s: None for s in ("train", "validate", "test")} if iterable else \
        split_indices(len(data_set), fractions, train["seed"])
    batches = {
        split: Batches(data_set, idx, train["batch_size"], split == "train", train["seed"], convert,
                       with_to_tensor, train["num_workers"] if split == "train" else 0,
                       iterable_split=(split, fractions) if iterable else None, nan_mode=nan_mode)
        for split, idx in indices.items()
    }
    sizes = {s: (len(i) if i is not None else -1) for s, i in indices.items()}
    if sizes["train"] == 0:
        raise HyraxError("the train split is empty", key="train.split.train",
                         fix="raise train.split.train or use a larger data set")
    sample = next(iter(Batches(data_set, indices["train"], min(train["batch_size"], 8), False,
                               train["seed"], convert, with_to_tensor,
                               iterable_split=("train", fractions) if iterable else None,
                               nan_mode=nan_mode)))
    return DataParts(data_set, batches, sample, sizes)


def model_class(config: Mapping[str, Any]) -> type:
    """The model class named by the config."""
    return locate_target("model", config["model"]["_target_"])


def count_outputs(data: DataParts) -> Optional[int]:
    """How many outputs a model needs for this data: the data set says, or its labels tell."""
    for attribute in ("num_outputs", "num_classes", "n_classes"):
        hint = getattr(data.data_set, attribute, None)
        if isinstance(hint, int):
            return hint
    from hyrax.train.evaluate import inputs_and_labels

    labels = inputs_and_labels(data.sample)[1]
    if labels is None:
        return None
    if torch.is_floating_point(labels):
        return 1 if labels.dim() == 1 else int(labels[0].numel())
    log.info("counting classes over the train split (set model.num_outputs to skip this)")
    return 1 + max(int(inputs_and_labels(batch)[1].max()) for batch in data.batches["train"])


def make_model(config: Mapping[str, Any], data: DataParts, device: torch.device) -> nn.Module:
    """Build the model on a data sample; a null `num_outputs` is filled in from the data."""
    params = component_params(config["model"])
    if "num_outputs" in params and params["num_outputs"] is None:
        params["num_outputs"] = count_outputs(data)
    return build_model(model_class(config), params, config, data.sample).to(device)


def attach_training_parts(model: nn.Module, config: Mapping[str, Any]) -> None:
    """Give the model `criterion`, `optimizer` and `scheduler` built from config, as the contract promises."""
    if not any(p.requires_grad for p in model.parameters()):
        raise HyraxError(f"{type(model).__qualname__} has no trainable parameters", key="model",
                         fix="pick a model with layers to train")
    model.criterion = build_component("criterion", config["criterion"], config)
    model.optimizer = build_component("optimizer", config["optimizer"], config, params=model.parameters())
    model.scheduler = build_component("scheduler", config.get("scheduler"), config, optimizer=model.optimizer)


def preflight(model: nn.Module, data: DataParts) -> None:
    """Run the model once on the data sample, so a model/data mismatch is one clear error, not a crash."""
    from hyrax.train.evaluate import inputs_and_labels, to_device

    x, y = inputs_and_labels(to_device(data.sample, next(model.parameters(), torch.empty(0)).device))
    if not isinstance(x, torch.Tensor):
        return
    name = type(model).__qualname__
    try:
        with torch.no_grad():
            output = model(x)
    except (RuntimeError, ValueError, IndexError) as err:
        raise HyraxError(
            f"{name} cannot take the data: a batch shaped {tuple(x.shape)} ({x.dtype}) failed in forward "
            f"{_expected_input(model)}: {_first_line(err)}", key="model",
            fix="make the model's input size match the data (see `hyrax-run verb=prepare`), "
            "or convert items in to_tensor") from err
    criterion = getattr(model, "criterion", None)
    if y is None or criterion is None or not isinstance(output, torch.Tensor):
        return
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # torch warns, not fails, on silent broadcasting
            criterion(output, y)
    except (RuntimeError, ValueError, IndexError, UserWarning) as err:
        raise HyraxError(
            f"{name}'s output shaped {tuple(output.shape)} does not fit labels shaped {tuple(y.shape)} "
            f"({y.dtype}) under {type(criterion).__name__}: {_first_line(err)}", key="criterion",
            fix="pick a criterion that fits the labels (criterion=mse for real-valued targets), "
            "or set model.num_outputs") from err


def _expected_input(model: nn.Module) -> str:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return f"(its first Linear layer expects {module.in_features} features)"
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"(its first convolution expects {module.in_channels} channels)"
    return ""


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def assemble(config: Mapping[str, Any], device: torch.device) -> tuple[DataParts, nn.Module]:
    """Data and model of a run, with the model's criterion, optimizer and scheduler attached."""
    data = prepare_data(config, build_data_set(config), model_class(config))
    model = make_model(config, data, device)
    attach_training_parts(model, config)
    preflight(model, data)
    return data, model
