"""How a failed run is reported: one clear message for bad input, a trimmed traceback for user code."""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyrax.errors import HyraxError

# The packages whose frames a user's traceback leaves out: ours and the ones that call into user code.
HIDDEN_PACKAGES = ("hyrax", "hydra", "omegaconf", "hydra_plugins", "submitit")


def full_error_requested() -> bool:
    """True when the user asked for complete tracebacks, as Hydra's users do."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def run_and_report(func: Callable[[], Any]) -> Any:
    """Run `func`; on failure print one message (bad input, exit 2) or the user's traceback (exit 1)."""
    try:
        return func()
    except Exception as ex:
        if full_error_requested():
            raise
        user_error = as_user_error(ex)
        if user_error is not None:
            sys.stderr.write(user_error.render() + "\n")
            sys.exit(HyraxError.exit_code)
        print_user_traceback(ex)
        sys.exit(1)


def as_user_error(ex: BaseException) -> HyraxError | None:
    """The bad-input error behind `ex` (itself or a cause), or None when user code crashed.

    When the bad input sits behind another error (a sweep that stopped because its trials failed),
    that error's first line is kept in front of the message.
    """
    seen: set[int] = set()
    cause: BaseException | None = ex
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        found = cause if isinstance(cause, HyraxError) else _from_config_error(cause)
        if found is not None:
            if cause is ex:
                return found
            context = str(ex).strip().splitlines()[0] if str(ex).strip() else type(ex).__name__
            return HyraxError(f"{context}\n{found.message}", key=found.key, fix=found.fix)
        cause = cause.__cause__ or cause.__context__
    return None


def _from_config_error(ex: BaseException) -> HyraxError | None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(ex, (HydraException, OmegaConfBaseException)):
        return None
    inner = ex.__cause__ if isinstance(ex.__cause__, OmegaConfBaseException) else ex
    key = getattr(inner, "full_key", None) or _key_from_text(str(ex))
    text = _first_lines(str(ex)) + ("" if inner is ex else "\n" + _first_lines(str(inner)))
    return HyraxError(text, key=key, fix=_fix_for(text, key))


def _key_from_text(text: str) -> str | None:
    match = re.search(r"override '([^']+)'|override ([\w./]+)=|Could not find '([^']+)'", text)
    return next((g for g in match.groups() if g), None) if match else None


def _first_lines(text: str, limit: int = 6) -> str:
    lines = [
        ln
        for ln in text.strip().splitlines()
        if ln.strip()
        and not ln.strip().startswith(
            ("object_type", "reference_type", "child_node", "ref_type", "full_key", "To append")
        )
    ]
    return "\n".join(lines[:limit])


def _fix_for(text: str, key: str | None) -> str:
    if re.search(r"Key '[^']+' (is )?not in|Key not in config|No match in config", text):
        return _unknown_key_fix(key)
    if "could not be converted" in text or "Value '" in text:
        return f"give {key} a value of the type its schema expects (see `hyrax-run --cfg job`)"
    if "Could not find" in text:
        from hyrax.config import COMPONENT_GROUPS

        if key and key.split("/")[0] not in COMPONENT_GROUPS:  # debug=, sweep=: presets, not classes
            return "pick one of the available options listed above"
        return "pick one of the available options listed above, or a dotted class path"
    return "correct the override; `hyrax-run --cfg job` prints the whole composed config"


def _unknown_key_fix(key: str | None) -> str:
    if not key:
        return "check the key's spelling; `hyrax-run --cfg job` lists every key"
    from omegaconf import OmegaConf

    from hyrax.config import HyraxConfig

    section, _, leaf = key.rpartition(".")
    try:
        node = OmegaConf.select(OmegaConf.structured(HyraxConfig), section) if section else None
        known = list(node.keys()) if node is not None and hasattr(node, "keys") else []
    except Exception:
        known = []
    close = difflib.get_close_matches(leaf, known, n=3)
    hint = f" Did you mean {', '.join(f'{section}.{c}' for c in close)}?" if close else ""
    return f"'{key}' is not a known key.{hint} To add a new key on purpose use +{key}=VALUE."


def print_user_traceback(ex: BaseException) -> None:
    """Print the traceback of a crash in user code with Hyrax's and Hydra's own frames left out."""
    frames = [f for f in traceback.extract_tb(ex.__traceback__) if not _is_ours(f.filename)]
    sys.stderr.write("Traceback (most recent call last, Hyrax and Hydra frames hidden):\n")
    sys.stderr.write("".join(traceback.format_list(frames)))
    sys.stderr.write("".join(traceback.format_exception_only(type(ex), ex)))
    sys.stderr.write("\nSet HYDRA_FULL_ERROR=1 for the complete stack trace.\n")


def _is_ours(filename: str) -> bool:
    """Whether a frame's file lies inside one of the installed `HIDDEN_PACKAGES` (by location, so a
    user's own project in a folder that happens to be called `hyrax` or `hydra` keeps its frames)."""
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return any(path.is_relative_to(folder) for folder in hidden_locations())


@functools.cache
def hidden_locations() -> tuple[Path, ...]:
    """The folders the `HIDDEN_PACKAGES` are installed in (a namespace package may have several)."""
    folders: list[Path] = []
    for name in HIDDEN_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            folders.extend(Path(p).resolve() for p in spec.submodule_search_locations or ())
    return tuple(folders)
