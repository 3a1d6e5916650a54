"""Building the run's parts from config: seeding, device, data set, model, criterion, optimizer, scheduler.

Every component gets the config as a read-only `ConfigView`, which records what it reads, so that
`check_all_used` can name a key the user set that nothing took (see `hyrax.reads`).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from hyrax.config import COMPONENT_GROUPS
from hyrax.errors import HyraxError
from hyrax.models.contract import (
    build_model,
    check_required,
    check_types,
    constructor_kwargs,
    has_own_step,
    inputs_and_labels,
)
from hyrax.ranges import check_parameters
from hyrax.reads import ConfigView, was_read
from hyrax.resolve import locate_target, reserved_keys
from hyrax.train.data import DataParts, prepare_data

log = logging.getLogger("hyrax")
DATA_LOCATION_PARAMS = ("data_location", "data_directory", "data_dir")
TRAINING_PARTS = ("criterion", "optimizer", "scheduler")


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
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if not available.get(name.split(":")[0], False):
        ranks = f"; for {name} data-parallel ranks, train.devices={name}" if name.isdigit() else ""
        raise HyraxError(
            f"device '{name}' is not available on this machine",
            key="train.device",
            fix=f"use train.device=auto or train.device=cpu{ranks}",
        )
    return torch.device(name)


def component_params(group: str, node: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a component config: everything but Hyrax's keys and class tables."""
    reserved = reserved_keys(group)
    return {
        k: v
        for k, v in node.items()
        if k not in reserved and not (isinstance(v, Mapping) and k[:1].isupper())
    }


def check_components(config: Mapping[str, Any]) -> None:
    """Check each component's values against its constructor (required ones given, types right) before
    anything is built."""
    for group in COMPONENT_GROUPS:
        node = config.get(group) or {}
        if node.get("_target_") is None:
            continue
        params = component_params(group, node)
        check_required(group, params)
        cls = locate_target(group, node["_target_"])
        check_types(group, cls, params)
        check_parameters(group, cls, params)


def build_component(group: str, node: Mapping[str, Any] | None, view: ConfigView, **injected: Any) -> Any:
    """Instantiate the class a component config names; None when its `_target_` is null."""
    if not node or node.get("_target_") is None:
        return None
    cls = locate_target(group, node["_target_"])
    params = component_params(group, node)
    check_required(group, params)
    check_types(group, cls, params)
    check_parameters(group, cls, params)
    injected.setdefault("config", view)
    try:
        return cls(**constructor_kwargs(cls, params, injected))
    except (TypeError, ValueError) as err:
        # torch's own classes reject bad values this way; in user classes only a signature mismatch
        # is bad input, anything else is a bug to show with its traceback.
        ours = group in TRAINING_PARTS or "argument" in str(err)
        if not ours:
            raise
        named = [k for k in params if re.search(rf"\b{re.escape(k)}\b", str(err))]
        raise HyraxError(
            f"{cls.__qualname__} rejected its arguments: {err}",
            key=f"{group}.{named[0]}" if len(named) == 1 else group,
            fix=f"check the {group}.* values against {cls.__qualname__}'s parameters",
        ) from err


def build_data_set(config: Mapping[str, Any], view: ConfigView | None = None) -> Any:
    """The data set the config names, given its constructor parameters, the config and, when its
    constructor asks (`data_location`, as Hyrax's data sets do), `data_set.data_location` or
    `general.data_dir`."""
    node = config["data_set"] or {}
    location = node.get("data_location") or (config.get("general") or {}).get("data_dir")
    return build_component(
        "data_set", node, view or ConfigView(config), **dict.fromkeys(DATA_LOCATION_PARAMS, location)
    )


def model_class(config: Mapping[str, Any]) -> type:
    """The model class named by the config."""
    return locate_target("model", config["model"]["_target_"])


def count_outputs(data: DataParts) -> int | None:
    """How many outputs a model needs for this data: the data set says, or its labels tell."""
    for attribute in ("num_outputs", "num_classes", "n_classes"):
        hint = getattr(data.data_set, attribute, None)
        if isinstance(hint, int):
            return hint
    labels = inputs_and_labels(data.sample_batch)[1]
    if labels is None:
        return None
    if torch.is_floating_point(labels):
        return 1 if labels.dim() == 1 else int(labels[0].numel())
    log.info("counting classes over the train split (set model.num_outputs to skip this)")
    return 1 + max(int(inputs_and_labels(batch)[1].max()) for batch in data.batches["train"])


def sample_shape(data: DataParts, batch_mode: bool) -> tuple[int, ...] | None:
    """The `shape` older Hyrax models ask for: the shape of one item's inputs."""
    x = inputs_and_labels(data.sample)[0]
    if not isinstance(x, torch.Tensor):
        return None
    return tuple(x.shape[1:]) if batch_mode else tuple(x.shape)


def make_model(
    config: Mapping[str, Any], data: DataParts, device: torch.device, view: ConfigView
) -> nn.Module:
    """Build the model on the data sample; a null `num_outputs` is filled in from the data."""
    params = component_params("model", config["model"])
    if "num_outputs" in params and params["num_outputs"] is None:
        params["num_outputs"] = count_outputs(data)
    batch_mode = config["train"].get("data_sample") == "batch"
    try:
        model = build_model(model_class(config), params, view, data.sample, sample_shape(data, batch_mode))
    except (ValueError, IndexError) as err:
        if not batch_mode and "unpack" in str(err):
            err.add_note(
                "hyrax: data_sample is one item, without the batch axis, as Hyrax's documentation "
                "says; a model written for current Hyrax releases (a batch of one) needs "
                "train.data_sample=batch"
            )
        raise
    return model.to(device)


def attach_training_parts(
    model: nn.Module, config: Mapping[str, Any], view: ConfigView, given: Iterable[str] = ()
) -> None:
    """Give the model `criterion`, `optimizer` and `scheduler` built from config, as the contract promises.

    A part the model set itself in `__init__` is kept (as Hyrax does): the log says so, and names
    any value the user set for that part, which then does nothing.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise HyraxError(
            f"{type(model).__qualname__} has no trainable parameters",
            key="model",
            fix="pick a model with layers to train",
        )
    name = type(model).__qualname__
    for group in TRAINING_PARTS:
        own = getattr(model, group, None)
        if own is not None:
            unused = sorted(k for k in given if k.split(".")[0] == group)
            log.info(
                "using %s's own %s (%s); the %s config is not used%s",
                name,
                group,
                type(own).__name__,
                group,
                f": {', '.join(unused)} do nothing" if unused else "",
            )
            continue
        injected = {"params": model.parameters()} if group == "optimizer" else {}
        if group == "scheduler":
            injected["optimizer"] = model.optimizer
        setattr(model, group, build_component(group, config.get(group), view, **injected))


def check_all_used(config: Mapping[str, Any], given: Iterable[str], reads: set[str], own: set[str]) -> None:
    """Fail, naming the key and its closest known spelling, when a component key the user set was taken
    by no constructor parameter and read by nothing (so it would have been silently ignored)."""
    for key in given:
        group, _, rest = key.partition(".")
        if group not in COMPONENT_GROUPS or not rest or group in own or was_read(key, reads):
            continue
        node = config.get(group) or {}
        if node.get("_target_") is None:
            continue
        first = rest.split(".")[0]
        cls = locate_target(group, node["_target_"])
        takes = _parameter_names(cls, group)
        if first in takes or first in reserved_keys(group) or "**" in takes:
            continue
        close = difflib.get_close_matches(first, sorted(takes), n=1)
        hint = f" Did you mean {group}.{close[0]}?" if close else ""
        raise HyraxError(
            f"'{key}' was set, but {cls.__qualname__} has no parameter '{first}' and nothing "
            f"read it, so it would do nothing.{hint}",
            key=key,
            fix=f"remove it or spell it as {cls.__qualname__} does "
            f"({', '.join(sorted(t for t in takes if t != '**')) or 'no parameters'})",
        )


def _parameter_names(cls: type, group: str) -> set[str]:
    from hyrax.resolve import INJECTED_PARAMS

    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return {"**"}
    names = {"**" if p.kind == p.VAR_KEYWORD else p.name for p in parameters}
    return names - INJECTED_PARAMS.get(group, set())


def assemble(
    config: Mapping[str, Any], device: torch.device, given: Iterable[str] = ()
) -> tuple[DataParts, nn.Module]:
    """Data and model of a run, with the model's criterion, optimizer and scheduler attached, checked
    against each other on a sample; every component key the user set must have been used."""
    from hyrax.train.preflight import preflight

    given = list(given)
    view = ConfigView(config)
    model_cls = model_class(config)
    data = prepare_data(config, build_data_set(config, view), model_cls, view.reads)
    model = make_model(config, data, device, view)
    own = {g for g in TRAINING_PARTS if getattr(model, g, None) is not None}
    attach_training_parts(model, config, view, given)
    check_all_used(config, given, view.reads, own)
    if config["train"].get("grad_clip") and has_own_step(model):
        raise HyraxError(
            f"train.grad_clip clips in the default training step, and {type(model).__qualname__} has its "
            "own train_step, so it would do nothing",
            key="train.grad_clip",
            fix="clip inside your train_step (torch.nn.utils.clip_grad_norm_), or remove train.grad_clip",
        )
    preflight(model, data)
    return data, model
