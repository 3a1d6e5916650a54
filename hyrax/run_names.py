"""Names of MLflow runs that say what a run is, so fifty trials can be told apart in the UI.

- a single run: `<model> <the overrides given> <time>`, e.g. `MLP optimizer.lr=0.001 Nov 30 14:03`;
- a sweep's parent: `<sweep or study name> <its overrides> <time>`;
- a sweep's child: `<sweep or study name> #<trial> lr=4.4e-3 hidden=16`: the values it was given,
  numbers rounded to two significant digits in the name only (the parameters keep every digit).

The run's folder is a tag (`hyrax.run_dir`), not its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

MAX_NAME = 200  # MLflow allows 250 characters; the UI shows far fewer
# Overrides that say how a run is tracked or where it writes, not what it is.
PLUMBING = ("mlflow.", "hydra.", "+hydra.", "++hydra.", "general.", "train.progress")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def short_value(value: str) -> str:
    """A number rounded to two significant digits (`0.004412` -> `4.4e-3`, `16` stays); others as given."""
    text = str(value)
    if not _NUMBER.match(text) or re.fullmatch(r"[+-]?\d+", text):
        return text
    number = float(text)
    if number == 0 or 1e-2 <= abs(number) < 1e4:
        return f"{number:.2g}"
    mantissa, exponent = f"{number:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """Each key's last part (`optimizer.lr` -> `lr`), or the whole key where two would share it."""
    keys = list(dict.fromkeys(keys))
    last = [k.lstrip("+~").rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k.lstrip("+~")) for k, s in zip(keys, last, strict=True)}


def shown_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that say what a run is: not how it is tracked or where it writes."""
    return [o for o in overrides if not o.lstrip("+~").startswith(PLUMBING) and "=" in o]


def compact(overrides: Sequence[str]) -> str:
    """`key=value` pairs with short keys and rounded values: `lr=4.4e-3 hidden=16`."""
    pairs = [o.split("=", 1) for o in shown_overrides(overrides)]
    names = short_keys(k for k, _ in pairs)
    return " ".join(f"{names[k]}={short_value(v)}" for k, v in pairs)


def _clip(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def _when(moment: datetime | None) -> str:
    return (moment or datetime.now()).strftime("%b %d %H:%M")


def model_name(config: Mapping[str, Any]) -> str:
    """The model's class name, from its `_target_`."""
    target = str((config.get("model") or {}).get("_target_") or "model")
    return target.rsplit(".", 1)[-1]


def single_run_name(config: Mapping[str, Any], overrides: Sequence[str], when: datetime | None = None) -> str:
    """`<model> <the overrides given> <time>` (the model's own choice is not repeated)."""
    given = [o for o in shown_overrides(overrides) if o.split("=", 1)[0].lstrip("+") != "model"]
    return _clip(" ".join([model_name(config), *given, _when(when)]))


def sweep_run_name(label: str, overrides: Sequence[str], when: datetime | None = None) -> str:
    """A sweep's parent: `<sweep or study name> <its overrides> <time>`."""
    given = [o for o in shown_overrides(overrides) if not o.startswith("sweep=")]
    return _clip(" ".join([label, *given, _when(when)]))


def child_run_name(label: str, number: int | str, swept: Sequence[str]) -> str:
    """A sweep's child: `<sweep or study name> #<trial> lr=4.4e-3 hidden=16`."""
    return _clip(f"{label} #{number} {compact(swept)}".rstrip())


def fixed_keys(sweep: Sequence[str]) -> list[str]:
    """The keys a sweep's command line sets to one value for every job (not `a=1,2`, not `interval()`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(sweep))
    except Exception:  # Hydra has accepted them already; if this parser does not, name every value
        return []
    return [o.key_or_group for o in parsed if not o.is_sweep_override()]


def swept_overrides(job: Sequence[str], fixed: Sequence[str]) -> list[str]:
    """What one job of a sweep was given beyond the sweep's fixed settings: its trial's values."""
    return [o for o in job if o.split("=", 1)[0].lstrip("+~") not in set(fixed)]
