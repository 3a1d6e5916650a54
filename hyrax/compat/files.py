"""Reading config files: TOML (Hyrax's format) and YAML."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hyrax.errors import HyraxError


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of a TOML file, or a HyraxError saying why it cannot be read."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    if not path.is_file():
        raise HyraxError(
            f"config file '{path}' does not exist (working directory: {Path.cwd()})",
            key="--config-file",
            fix="point --config-file at an existing .toml file",
        )
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise HyraxError(
            f"config file '{path}' is not valid TOML: {err}",
            key="--config-file",
            fix="correct the file's syntax",
        ) from err


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML or YAML file's contents as nested dicts."""
    if path.suffix == ".toml":
        return read_toml(path)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))  # type: ignore[return-value]
