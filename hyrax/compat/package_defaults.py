"""Defaults a user package ships for its classes, as Hyrax packages do: a `default_config.toml` (or
`default_config.yaml`) beside the class's module or in any package above it.

Tables `[model.MyModel]` (any group) become tables of the group config when a class of that package
is chosen (all of the package's tables for that group, as Hyrax has every table of its defaults:
a class may read its sibling's), so `model=pkg.MyModel model.MyModel.hidden=64` needs no `+`;
tables named after the package
(`[mypkg.MyModel]`, Hyrax's external-library layout) become top-level sections of the run config.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyrax.compat.files import read_config_file

FILE_NAMES = ("default_config.toml", "default_config.yaml", "default_config.yml")


@functools.lru_cache(maxsize=64)
def package_defaults(module_name: str) -> dict[str, Any]:
    """The merged defaults files from the module's folder up to its top-level package (nearest wins)."""
    module = sys.modules.get(module_name) or _import(module_name)
    path = Path(getattr(module, "__file__", "") or "")
    top = module_name.split(".")[0]
    merged: dict[str, Any] = {}
    folder = path.parent
    for _ in range(module_name.count(".") + 1):
        for name in FILE_NAMES:
            if (folder / name).is_file():
                merged = _merge(read_config_file(folder / name), merged)
        if folder.name == top:
            break
        folder = folder.parent
    return merged


def class_tables(group: str, cls: type) -> dict[str, Any]:
    """The `[group.ClassName]` tables the class's package ships ({} when none)."""
    section = package_defaults(cls.__module__).get(group) or {}
    return {name: dict(t) for name, t in section.items() if isinstance(t, Mapping) and name[:1].isupper()}


def package_tables(cls: type) -> dict[str, Any]:
    """The top-level tables named after the class's package (`[mypkg.MyModel]`), or {}."""
    top = cls.__module__.split(".")[0]
    table = package_defaults(cls.__module__).get(top)
    return {top: table} if isinstance(table, Mapping) else {}


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, Mapping) and isinstance(out.get(key), dict)
            else value
        )
    return out


def with_defaults(config: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with every key of `defaults` it lacks filled in (its own values win)."""
    for key, value in defaults.items():
        if key not in config:
            config[key] = value
        elif isinstance(value, Mapping) and isinstance(config[key], dict):
            with_defaults(config[key], value)
    return config
