"""Turning a group choice (a config name, a dotted class path or a bare class name) into a class.

A resolved class is described to Hydra as a synthesized config: `_target_` plus the constructor's
keyword parameters with their defaults (`???` where required), so every one is an overridable key.
"""

from __future__ import annotations

import difflib
import enum
import importlib
import inspect
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from hyrax import registry
from hyrax.errors import HyraxError

# Parameters Hyrax fills in itself, per group; they never appear as config keys.
INJECTED_PARAMS = {
    "model": {"config", "data_sample", "shape"},
    "data_set": {
        "config",
        "metadata_table",
        "object_id_column_name",
        "data_location",
        "data_directory",
        "data_dir",
    },
    "optimizer": {"params"},
    "scheduler": {"optimizer"},
    "criterion": set(),
}
# Keys of a component config that Hyrax reads and does not pass to the constructor: the class
# (`name` is Hyrax's spelling of the choice) and, for data sets, how Hyrax reads and splits them.
RESERVED_KEYS = {"_target_", "name"}
DATA_SET_KEYS = {
    "nan_mode",
    "nan_quantile",
    "fields",
    "primary_id_field",
    "data_location",
    "train_size",
    "validate_size",
    "test_size",
}


def reserved_keys(group: str) -> set[str]:
    """The keys of a `group` config that are Hyrax's, never constructor arguments."""
    return RESERVED_KEYS | DATA_SET_KEYS if group == "data_set" else RESERVED_KEYS


# Where a bare name is looked up after the registries, per group.
TORCH_NAMESPACES = {
    "model": ["torch.nn"],
    "criterion": ["torch.nn"],
    "optimizer": ["torch.optim"],
    "scheduler": ["torch.optim.lr_scheduler"],
    "data_set": [],
}
BUILTIN_MODULES = {"model": "hyrax.models.builtin", "data_set": "hyrax.data_sets.builtin"}
ENTRY_POINT_GROUP = "hyrax.plugins"
IMPORTS_ENV = "HYRAX_IMPORTS"


def import_dotted(path: str) -> Any:
    """Import `pkg.module.Attr` (attributes may be nested); None when nothing by that path exists."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # this prefix is not a module; try a shorter one
            if (err.name or "").split(".")[0] in ("pytorch_lightning", "lightning"):
                from hyrax.train.lightning_parts import missing_lightning

                raise missing_lightning(f"{path} (it imports {err.name})") from None
            raise  # the user's module exists but imports something missing: show that
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def resolve_class(group: str, name: str) -> type:
    """The class a group choice names, or a HyraxError listing the closest names and where we looked."""
    found = _find(group, name)
    if isinstance(found, type):
        return found
    raise HyraxError(
        f"cannot find {group} '{name}'.{_suggestions(group, name)}\nLooked in: {_where_we_look(group)}",
        key=group,
        fix=f"use a config name, a dotted class path ({group}=mypkg.module.MyClass) "
        f"or decorate/subclass your class so it registers, and check the spelling",
    )


def _find(group: str, name: str) -> Any:
    if "." in name:
        return import_dotted(name)
    _import_builtins(group)
    cls = registry.lookup(group, name)
    if cls is None:
        for namespace in TORCH_NAMESPACES.get(group, []):
            candidate = getattr(importlib.import_module(namespace), name, None)
            if isinstance(candidate, type):
                return candidate
        _load_entry_points()
        cls = registry.lookup(group, name)
    return cls


def _import_builtins(group: str) -> None:
    module = BUILTIN_MODULES.get(group)
    if module:
        importlib.import_module(module)


_entry_points_loaded = False


def _load_entry_points() -> None:
    """Import the modules that may register classes: `$HYRAX_IMPORTS` (comma-separated) and the
    packages that announce themselves through the `hyrax.plugins` entry point group."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for module in filter(None, os.environ.get(IMPORTS_ENV, "").split(",")):
            importlib.import_module(module.strip())
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()


def _candidates(group: str) -> list[str]:
    from hyrax.config import config_names

    names = set(registry.names(group)) | set(config_names(group))
    for namespace in TORCH_NAMESPACES.get(group, []):
        module = importlib.import_module(namespace)
        names.update(n for n in dir(module) if isinstance(getattr(module, n), type) and n[0].isupper())
    return sorted(names)


def _suggestions(group: str, name: str) -> str:
    tail = name.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(tail, _candidates(group), n=5, cutoff=0.5)
    return f" Closest matches: {', '.join(close)}." if close else ""


def _where_we_look(group: str) -> str:
    from hyrax.config import builtin_dir, user_dir

    places = [f"config files in {d / group}" for d in (user_dir("conf"), builtin_dir("conf")) if d]
    places.append(f"classes registered as {group}s")
    places += [f"{ns}.*" for ns in TORCH_NAMESPACES.get(group, [])]
    places.append(f"modules in ${IMPORTS_ENV} and packages with a '{ENTRY_POINT_GROUP}' entry point")
    places.append("dotted paths (pkg.module.Class) importable from the working directory")
    return "; ".join(places)


def constructor_params(group: str, cls: type) -> dict[str, Any]:
    """The keyword parameters of `cls` that become config keys, with defaults (`???` when required)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return {}
    params: dict[str, Any] = {}
    injected = INJECTED_PARAMS.get(group, set())
    for p in signature.parameters.values():
        if p.name in injected or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if p.default is inspect.Parameter.empty:
            params[p.name] = "???"
        else:
            value = _config_value(p.default)
            if value is not _UNREPRESENTABLE:
                params[p.name] = value
    return params


_UNREPRESENTABLE = object()


def _config_value(value: Any) -> Any:
    """A default as a config value; objects a config cannot hold are left out (the class keeps them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _config_value(value.value)
    if isinstance(value, (list, tuple)):
        items = [_config_value(v) for v in value]
        return _UNREPRESENTABLE if _UNREPRESENTABLE in items else items
    if isinstance(value, Path):
        return str(value)
    return _UNREPRESENTABLE


def synthesize_config(group: str, name: str) -> dict[str, Any]:
    """The config Hydra composes for `group=name` when `name` is a class rather than a config file."""
    from hyrax.compat.package_defaults import class_tables

    cls = resolve_class(group, name)
    node: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    node.update(constructor_params(group, cls))
    node.update(class_tables(group, cls))  # the [group.ClassName] defaults the class's package ships
    if group == "data_set":
        node.setdefault("nan_mode", None)
    return node


def locate_target(group: str, target: str) -> type:
    """The class behind a composed config's `_target_` (from a config file or a synthesized one)."""
    if target.startswith("__main__.") or "." not in target:
        return resolve_class(group, target.rsplit(".", 1)[-1])
    cls = import_dotted(target)
    if not isinstance(cls, type) and not callable(cls):
        return resolve_class(group, target)
    return cls
