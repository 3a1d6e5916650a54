"""The Python API's editable config: composed by Hydra like the command line's, edited as plain dicts.

A notebook edits `h.config` (or calls `h.set_config`); before a verb runs, every edit becomes a Hydra
override layered after the config file's and the constructor's, and the config is composed again.
So an edit is checked exactly as the same override on the command line would be (`train.epoch=3`
fails naming `train.epochs`), and a `name` choice synthesizes that class's config and defaults.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyrax.compat.overrides import given_keys, layered, name_choices, override, override_key
from hyrax.config import COMPONENT_GROUPS, PRIMARY_CONFIG, builtin_dir, plain, register_configs
from hyrax.errors import HyraxError

log = logging.getLogger("hyrax")


def as_plain(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain dicts and lists."""
    return dict(plain(cfg))


class Section(dict):
    """A component group's config; setting `name` chooses the class at once, as in Hyrax."""

    def __init__(self, session: Session, group: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._session, self._group = session, group

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "name":
            self._session.choose(self._group, value)
        else:
            super().__setitem__(key, value)


class Session:
    """Composition state of one `Hyrax` object: its overrides, choices and the config being edited."""

    def __init__(
        self,
        overrides: Sequence[str],
        config_file: str | os.PathLike | None,
        config_name: str = PRIMARY_CONFIG,
    ) -> None:
        from hyrax.compat.toml_file import default_config_file, toml_overrides
        from hyrax.rerun import expand_from_run, has_from_run

        given = name_choices(overrides)
        rerun = has_from_run(given)  # from_run=<id>: the run's config replaces ./hyrax_config.toml
        path = Path(config_file) if config_file else None if rerun else default_config_file()
        if path is not None and not config_file:
            log.info("reading %s (Hyrax's config file)", path)
        self.file_overrides = toml_overrides(path) if path else []
        self.overrides = given
        if rerun:
            self.overrides = expand_from_run(layered(self.file_overrides, given), Path.cwd(), config_name)
            self.file_overrides = []
        self.extra: list[str] = []  # from set_config of Hyrax tables (data_request, a class's table)
        self.config_name = config_name
        self.baseline = self._compose(self._base_overrides())
        self.config: dict[str, Any] = self._editable(self.baseline)

    def _base_overrides(self) -> list[str]:
        return layered(self.file_overrides, self.overrides, self.extra)

    def _compose(self, overrides: list[str]) -> dict[str, Any]:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from hyrax.report import as_user_error

        register_configs()
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(builtin_dir("conf")), version_base="1.3"):
                return as_plain(compose(config_name=self.config_name, overrides=overrides))
        except Exception as err:
            user_error = as_user_error(err)
            if user_error is None:
                raise
            raise user_error from None

    def _editable(self, plain: Mapping[str, Any]) -> dict[str, Any]:
        config = copy.deepcopy(dict(plain))
        for group in COMPONENT_GROUPS:
            if isinstance(config.get(group), Mapping):
                config[group] = Section(self, group, config[group])
        return config

    def choose(self, group: str, name: str) -> None:
        """Make `name` the class of `group` now, keeping the other edits made so far."""
        edits = [e for e in self.edits() if override_key(e).split(".")[0] != group]
        self.extra = layered(self.extra, [f"{group}={name}"])
        self._recompose(edits)
        self.baseline[group]["name"] = name
        self.config[group] = Section(self, group, copy.deepcopy(self.baseline[group]))

    def set(self, key: str, value: Any) -> None:
        """`set_config`: a dotted key of the config, or one of Hyrax's tables that map onto it."""
        key = key.strip("'\"")
        head, _, rest = key.partition(".")
        if head in self.config and rest:
            node: Any = self.config
            for part in key.split(".")[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[key.split(".")[-1]] = value
        elif head in self.config and not rest and not isinstance(value, Mapping):
            self.config[head] = value
        else:
            self._hyrax_table(key, value)

    def _hyrax_table(self, key: str, value: Any) -> None:
        from hyrax.compat.toml_file import hyrax_overrides

        chosen = {g: (self.config.get(g) or {}).get("_target_") for g in COMPONENT_GROUPS}
        edits = self.edits()
        self.extra = layered(self.extra, hyrax_overrides({key: value}, "set_config", chosen))
        self._recompose(edits)

    def _recompose(self, edits: list[str]) -> None:
        """Compose the baseline again after the overrides changed, and the edited config on top of it."""
        self.baseline = self._compose(self._base_overrides())
        self.config.clear()
        self.config.update(self._editable(self._compose(layered(self._base_overrides(), edits))))

    def edits(self) -> list[str]:
        """The user's changes to `config` since it was composed, as overrides."""
        out: list[str] = []
        for key, value in _changes(self.baseline, self.config):
            top = key.split(".")[0]
            if top not in self.baseline:
                close = difflib.get_close_matches(top, list(self.baseline), n=1)
                raise HyraxError(
                    f"'{top}' is not a section of the config"
                    f"{f'; did you mean {close[0]}?' if close else '.'}",
                    key=key,
                    fix="set a key that `h.config` has, or use h.set_config for Hyrax's tables",
                )
            out.append(override(key, value, add=top in COMPONENT_GROUPS or "." not in key))
        return out

    def final_config(self) -> tuple[dict[str, Any], list[str]]:
        """The config a verb runs with, composed with every edit, and the keys the user set."""
        edits = self.edits()
        everything = layered(self._base_overrides(), edits)
        return self._compose(everything), given_keys(
            [*self.file_overrides, *self.overrides, *self.extra, *edits]
        )


def _changes(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Leaf keys whose values differ between two nested configs (new sections give all their leaves)."""
    changes: list[tuple[str, Any]] = []
    for key, value in after.items():
        path = f"{prefix}{key}"
        old = before.get(key, _MISSING) if isinstance(before, Mapping) else _MISSING
        if isinstance(value, Mapping) and value and (isinstance(old, Mapping) or old is _MISSING):
            changes += _changes(old if isinstance(old, Mapping) else {}, value, f"{path}.")
        elif old is _MISSING or old != value:
            changes.append((path, value))
    return changes


_MISSING = object()
