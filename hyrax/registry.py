"""Registries of user classes that can be named by their bare class name (`model=MyModel`)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound=type)

MODELS: dict[str, type] = {}
DATA_SETS: dict[str, type] = {}

_BY_GROUP = {"model": MODELS, "data_set": DATA_SETS}


def register(group: str, cls: T) -> T:
    """Remember `cls` under its class name for `group`; a redefinition (a re-run notebook cell) wins."""
    _BY_GROUP[group][cls.__name__] = cls
    return cls


def lookup(group: str, name: str) -> type | None:
    """The class registered under `name` for `group`, if any."""
    return _BY_GROUP.get(group, {}).get(name)


def names(group: str) -> list[str]:
    """All bare names registered for `group`."""
    return sorted(_BY_GROUP.get(group, {}))
