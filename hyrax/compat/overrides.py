"""Writing config values as Hydra override strings, and Hyrax's `<group>.name=X` as the choice `<group>=X`.

Settings from a Hyrax TOML file reach Hydra as overrides placed before the command line's own, so
the command line wins and every value goes through the same composition and checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hyrax.config import COMPONENT_GROUPS
from hyrax.resolve import DATA_SET_KEYS

_NAME_CHOICE = re.compile(rf"^\+{{0,2}}({'|'.join(COMPONENT_GROUPS)})\.name=(.*)$", re.S)
_HYRAX_DATA_SET_KEY = re.compile(rf"^\+{{0,2}}data_set\.({'|'.join(sorted(DATA_SET_KEYS | {'seed'}))})=")
_PLAIN = re.compile(r"^[A-Za-z_][\w\-./:]*$")
_RESERVED_WORDS = {"null", "true", "false", "inf", "nan", "none"}


def render(value: Any) -> str:
    """A Python value in Hydra's override grammar (`null`, `true`, `1e-3`, `'text'`, `[1,2]`, `{a:1}`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_key(k)}:{render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(v) for v in value) + "]"
    # Hydra's quoted strings: a quote is escaped, and so are backslashes right before a quote or the end.
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value)).replace("'", "\\'")
    return f"'{text}'"


def _key(key: Any) -> str:
    text = str(key)
    return text if _PLAIN.match(text) and text.lower() not in _RESERVED_WORDS else render(text)


def override(key: str, value: Any, add: bool = False) -> str:
    """`key=value` (or `++key=value`, which also adds a key the config does not have yet)."""
    return f"{'++' if add else ''}{key}={render(value)}"


def name_choices(args: Iterable[str]) -> list[str]:
    """Command-line overrides in Hyrax's spellings made Hydra's: `model.name=pkg.Cls` (also with `+`) is
    `model=pkg.Cls`, and Hyrax's own data set keys (`data_set.fields=[...]`, `data_set.train_size=0.6`,
    ...), which a data set's config need not list, are set with `++`."""
    out = []
    for arg in args:
        match = _NAME_CHOICE.match(arg)
        if match:
            out.append(f"{match.group(1)}={match.group(2)}")
        elif _HYRAX_DATA_SET_KEY.match(arg):
            out.append("++" + arg.lstrip("+"))
        else:
            out.append(arg)
    return out


def override_key(arg: str) -> str:
    """The key an override sets: `++model.hidden=3` -> `model.hidden`, `model=mlp` -> `model`."""
    return arg.split("=", 1)[0].lstrip("+~")


def layered(*layers: Iterable[str]) -> list[str]:
    """Overrides from several sources, later ones winning: an earlier override of the same key is dropped
    (Hydra refuses two values for one key)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for arg in layer:
            merged.pop(override_key(arg), None)
            merged[override_key(arg)] = arg
    return list(merged.values())


def given_keys(args: Iterable[str]) -> list[str]:
    """The dotted config keys a list of overrides sets (group choices and deletions left out)."""
    return [override_key(a) for a in args if "=" in a and not a.startswith("~") and "." in override_key(a)]
