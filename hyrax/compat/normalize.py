"""Hyrax spellings inside a composed config, turned into ours before a run reads it."""

from __future__ import annotations

import logging
from typing import Any

from hyrax.errors import HyraxError

log = logging.getLogger("hyrax")
DATA_SAMPLE_MODES = ("item", "batch")


def normalize(config: dict[str, Any]) -> dict[str, Any]:
    """Apply `[data_loader]`, `[general]` and Hyrax's `train.resume = false` to a plain config, in place."""
    train = config["train"]
    train["resume"] = _resume(train.get("resume"))
    loader = config.get("data_loader") or {}
    for key in ("batch_size", "num_workers"):
        if loader.get(key) is not None:
            train[key] = loader[key]
    general = config.get("general") or {}
    level = str(general.get("log_level", "info")).upper()
    if not isinstance(logging.getLevelName(level), int):
        raise HyraxError(
            f"unknown log level '{general['log_level']}'",
            key="general.log_level",
            fix="use debug, info, warning or error",
        )
    logging.getLogger("hyrax").setLevel(level)
    if general.get("dev_mode"):
        log.warning("general.dev_mode is a Hyrax setting with no effect in hyrax-run")
    if train.get("data_sample", "item") not in DATA_SAMPLE_MODES:
        raise HyraxError(
            f"unknown train.data_sample '{train['data_sample']}'",
            key="train.data_sample",
            fix="use item (one item, as Hyrax's docs say) or batch (a batch of one)",
        )
    return config


def _resume(value: Any) -> str:
    """Hyrax writes `resume = false` for "start fresh" and may write true for "continue"."""
    if value in (None, False, "", "false", "False"):
        return "none"
    if value is True:
        return "auto"
    return str(value)
