"""Hydra adapters: add the user's `./conf` to the search path, and answer choices no file holds.

The `hyrax://` config source answers `model/mypkg.MyModel` (any component group, any dotted path or
registered bare name) with a config synthesized from the class, and `sweep/NAME` from the shipped
or the user's `sweeps/` folder. Hydra imports this module on every run: keep it light.
"""

from __future__ import annotations

import builtins
import os
import re

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from hyrax.config import COMPONENT_GROUPS

_CLASS_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
_SWEEP_GROUP = "sweep"


class HyraxSearchPathPlugin(SearchPathPlugin):
    """Puts the user's `./conf` before the shipped configs, and the `hyrax://` source last.

    Only for Hyrax's own app: other Hydra apps in the same environment are left alone.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from hyrax.config import builtin_dir, user_dir

        ours = os.path.realpath(builtin_dir("conf"))
        if not any(os.path.realpath(e.path.removeprefix("file://")) == ours for e in search_path.get_path()):
            return
        user_conf = user_dir("conf")
        if user_conf is not None:
            search_path.prepend(provider="hyrax-user", path=f"file://{user_conf}")
        search_path.append(provider="hyrax", path="hyrax://classes")


class HyraxConfigSource(ConfigSource):
    """Synthesizes configs for class choices and serves sweep presets."""

    @staticmethod
    def scheme() -> str:
        return "hyrax"

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path in COMPONENT_GROUPS or config_path == _SWEEP_GROUP

    def is_config(self, config_path: str) -> bool:
        group, _, name = config_path.partition("/")
        if group == _SWEEP_GROUP:
            return _sweep_file(name) is not None
        return group in COMPONENT_GROUPS and bool(_CLASS_NAME.match(name))

    def load_config(self, config_path: str) -> ConfigResult:
        group, _, name = config_path.partition("/")
        if group == _SWEEP_GROUP:
            return self._load_sweep(name)
        from hyrax.resolve import synthesize_config

        node = synthesize_config(group, name.removesuffix(".yaml"))
        return ConfigResult(
            config=OmegaConf.create(node),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header={"package": group},
        )

    def _load_sweep(self, name: str) -> ConfigResult:
        path = _sweep_file(name)
        if path is None:
            raise ConfigLoadError(f"Sweep preset not found: {name}")
        with open(path, encoding="utf-8") as f:
            header = ConfigSource._get_header_dict(f.read(512))
            f.seek(0)
            cfg = OmegaConf.load(f)
        return ConfigResult(
            config=cfg, path=f"file://{os.path.dirname(path)}", provider=self.provider, header=header
        )

    def list(self, config_path: str, results_filter: ObjectType | None) -> builtins.list[str]:
        if config_path != _SWEEP_GROUP or results_filter == ObjectType.GROUP:
            return []
        from hyrax.config import sweep_names

        return [f"{_SWEEP_GROUP}/{n}" for n in sweep_names()]


def _sweep_file(name: str) -> str | None:
    from hyrax.config import config_dirs

    name = name.removesuffix(".yaml")
    for directory in config_dirs("sweeps"):
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return str(candidate)
    return None
