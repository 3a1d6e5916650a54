"""Re-run or fork a recorded run: `hyrax-run from_run=<MLflow run id> [overrides]`.

The recorded config is the run's `config/config.yaml` artifact (Hydra's `.hydra/config.yaml`, or the
Python API's `config.yaml`), read from the store that `mlflow.tracking_uri=` on the command line, else
`MLFLOW_TRACKING_URI`, else `./mlflow.db` names; when the artifact is missing (or has masked secrets)
and the run's directory is on this machine, its local copy. `expand_from_run` turns `from_run=<id>`
into plain Hydra overrides, so the command line, `--cfg job`, sweeps (`-m`) and the Python API all
compose the recorded config the same way:

1. the recorded overrides (`config/overrides.yaml`) are applied again: they make the same group
   choices (`model=cnn`), so today's defaults lists, dotted class choices and sweep presets apply;
2. every leaf where today's composition of them differs from the record (the conf files or a class's
   defaults changed since) is set back with `++key=value`, or removed with `~key`, values written in
   Hydra's override grammar (`render`), so the result equals the record;
3. the command line's own overrides come last and win. A group it chooses again (`model=linear`)
   drops the recorded choice and every recorded leaf under that group, and whatever its choices change
   elsewhere (a data set's own criterion, a sweep preset's settings) is left as they set it.

Recorded values that are not copied, and why:
- `from_run`: the new run's is the id it came from (its tag `hyrax.from_run`).
- `from_run_allow_drift`: a permission given for one launch, not part of the experiment.
- `train.resume`: the new run starts fresh; resuming the old run is `train.resume=<id>` instead.
- `mlflow.parent_run_id`: the new run is not a child of the old run's sweep.
- `mlflow.tracking_uri`: the new run goes to the store the record was read from (and the recorded
  value may have had its password masked).
Keys the record lacks but today's typed sections have (a setting added to Hyrax since) keep today's
default; a key whose value is null cannot be removed by a Hydra override and is kept (with a warning).

Before anything runs: a launch directory in a git repository whose HEAD differs from the run's
recorded commit (or that has uncommitted changes where the run had none) is refused, naming
`from_run_allow_drift`; with `from_run_allow_drift=true` it is a warning. Installed packages that
differ from the run's recorded `requirements.txt` (its own, or its sweep parent's) are a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hyrax.compat.overrides import override_key, render
from hyrax.config import COMPONENT_GROUPS, PRIMARY_CONFIG, HyraxConfig, config_dirs
from hyrax.errors import HyraxError
from hyrax.redact import MASK
from hyrax.run_lookup import ALLOW_DRIFT, RecordedRun, check_drift, open_run, warn_changed_packages

log = logging.getLogger("hyrax")

FROM_RUN = "from_run"
NOT_COPIED = (FROM_RUN, ALLOW_DRIFT, "train.resume", "mlflow.parent_run_id", "mlflow.tracking_uri", "hydra")
CONFIG_ARTIFACT, OVERRIDES_ARTIFACT = "config/config.yaml", "config/overrides.yaml"
_MISSING = object()
_PATH_PART = re.compile(r"^(?:[A-Za-z_$][\w$-]*|0|[1-9][0-9]*)$")  # one part of an override's key
_LITERAL_KEY = re.compile(r"^[A-Za-z_][\w-]*$")  # a key inside a {k:v} value
_TYPED_WORDS = {"null", "true", "false", "nan", "inf"}  # such keys would not stay strings


def has_from_run(overrides: Sequence[str]) -> bool:
    """Whether the overrides ask for `from_run=<id>`."""
    return any(override_key(o) == FROM_RUN and not o.startswith("~") for o in overrides)


def expand_from_run(
    overrides: Sequence[str], launch_dir: Path, config_name: str = PRIMARY_CONFIG
) -> list[str]:
    """The overrides with `from_run=<id>` replaced by ones that compose that run's recorded config, the
    other overrides on top and `from_run=<id>` last (unchanged when there is no `from_run`)."""
    given = [o for o in overrides if override_key(o) == FROM_RUN and not o.startswith("~")]
    run_id = given[-1].split("=", 1)[1].strip().strip("'\"") if given else ""
    if run_id in ("", "null", "None"):
        return list(overrides)
    new = [o for o in overrides if override_key(o) != FROM_RUN]
    record = open_run(run_id, _lookup_uri(new, launch_dir), FROM_RUN)
    recorded, recorded_overrides = recorded_config(record)
    check_drift(record, launch_dir, _allow_drift(new))
    warn_changed_packages(record)
    expanded = replay(recorded, recorded_overrides, new, config_name)
    log.info("from_run: composing run %s's config%s", record.id, f" with {' '.join(new)}" if new else "")
    quoted = re.fullmatch(r"[0-9e]+", record.id)  # all digits (or one 'e'): Hydra would read a number
    return [*expanded, f"{FROM_RUN}='{record.id}'" if quoted else f"{FROM_RUN}={record.id}"]


def _value(arg: str) -> Any:
    """The value of one override as Hydra parses it (the raw text when it does not parse)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(arg).value()
    except Exception:  # Hydra reports a bad override itself, later
        return arg.split("=", 1)[1]


def _last_value(overrides: Sequence[str], key: str) -> Any:
    found = [o for o in overrides if override_key(o) == key and not o.startswith("~")]
    return _value(found[-1]) if found else None


def _lookup_uri(new: Sequence[str], launch_dir: Path) -> str:
    from hyrax.tracking import tracking_uri

    configured = _last_value(new, "mlflow.tracking_uri")
    return tracking_uri(str(configured) if configured else None, launch_dir)


def _allow_drift(new: Sequence[str]) -> bool:
    value = _last_value(new, ALLOW_DRIFT)
    return value is True or str(value).lower() in ("true", "yes", "on", "1")


def recorded_config(record: RecordedRun) -> tuple[dict[str, Any], list[str]]:
    """The run's recorded config (unresolved) and the overrides it was composed with."""
    text, overrides, source = _recorded_texts(record)
    log.info("from_run: run %s's config from %s", record.id, source)
    config = _load_yaml(text)
    masked = [path for path, value in _leaves(config) if isinstance(value, str) and MASK in value]
    if masked:
        log.warning("from_run: run %s's config was recorded masked in: %s", record.id, ", ".join(masked))
    return config, [str(o) for o in (_load_yaml(overrides) if overrides else [])]


def _recorded_texts(record: RecordedRun) -> tuple[str, str | None, str]:
    """The texts of the run's config and overrides files, and where they came from: the artifacts, or
    the run directory's copies when the artifacts are missing or have secrets masked."""
    text = record.artifact_text(CONFIG_ARTIFACT)
    local = _local_config(record.run_dir)
    if text is not None and (local is None or MASK not in text):
        return text, record.artifact_text(OVERRIDES_ARTIFACT), f"artifact {CONFIG_ARTIFACT}"
    if local is not None:
        overrides = local.parent / "overrides.yaml"
        hydra_dir = local.parent.name == ".hydra" and overrides.is_file()
        return local.read_text(), overrides.read_text() if hydra_dir else None, str(local)
    raise HyraxError(
        f"run {record.id} has no recorded config: no {CONFIG_ARTIFACT} artifact, and {record.missing_dir()}",
        key=FROM_RUN,
        fix=record.sweep_hint(FROM_RUN)
        or "give the id of a training run started by hyrax-run, or copy its run directory to this machine",
    )


def _local_config(run_dir: Path | None) -> Path | None:
    if run_dir is None:
        return None
    found = [p for p in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml") if p.is_file()]
    return found[0] if found else None


def _load_yaml(text: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.create(text), resolve=False)


def _leaves(config: Mapping[Any, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            found += _leaves(value, f"{prefix}{key}.")
        else:
            found.append((f"{prefix}{key}", value))
    return found


def replay(
    recorded: Mapping[str, Any], recorded_overrides: Sequence[str], new: Sequence[str], config_name: str
) -> list[str]:
    """Overrides that compose `recorded` (but for `NOT_COPIED`) with the `new` overrides on top."""
    chosen = _chosen_groups(new)
    kept = [o for o in recorded_overrides if not _skipped(override_key(o), set(NOT_COPIED))]
    base = [o for o in kept if override_key(o).split(".")[0] not in chosen]
    now = compose(kept, config_name)
    skip = set(NOT_COPIED) | chosen
    choices = [o for o in new if override_key(o) in chosen and not _is_sweep(o)]
    if choices:  # what the new choices change, against the recorded ones, is theirs to set
        with_choices = compose([*base, *choices], config_name)
        skip |= _changed_paths(now, with_choices)
        now = with_choices
    new_keys = {override_key(o) for o in new}
    diff = [o for o in config_diff(now, recorded, skip) if override_key(o) not in new_keys]
    replaced = new_keys | ({override_key(o) for o in diff} - _group_names())
    return [o for o in base if override_key(o) not in replaced] + diff + list(new)


def _group_names() -> set[str]:
    folders = {p.name for d in config_dirs("conf") for p in d.iterdir() if p.is_dir() and p.name != "hydra"}
    return set(COMPONENT_GROUPS) | {"sweep"} | folders


def _chosen_groups(new: Sequence[str]) -> set[str]:
    """The config groups the new overrides choose (`model=linear`)."""
    groups = _group_names()
    return {override_key(o) for o in new if not o.startswith("~") and override_key(o) in groups}


def _is_sweep(arg: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(arg).is_sweep_override()
    except Exception:  # Hydra reports it when it composes
        return False


def _skipped(path: str, skip: set[str]) -> bool:
    return any(path == s or path.startswith(f"{s}.") for s in skip)


def compose(overrides: Sequence[str], config_name: str = PRIMARY_CONFIG) -> dict[str, Any]:
    """The job config Hydra composes from `overrides` today, interpolations left as written."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hyrax.config import builtin_dir, register_configs
    from hyrax.report import as_user_error

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(builtin_dir("conf")), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except Exception as err:
        found = as_user_error(err)
        raise HyraxError(
            "the recorded run's config does not compose with today's config files: "
            + (found.render() if found else str(err).splitlines()[0]),
            key=FROM_RUN,
            fix="restore the config files the run used (git checkout its commit), or choose the "
            "failing group again on the command line",
        ) from None
    return typing.cast(dict, OmegaConf.to_container(cfg, resolve=False))


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1 is not 1.0 nor True; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _changed_paths(a: Mapping[Any, Any], b: Mapping[Any, Any], prefix: str = "") -> set[str]:
    """The dotted paths of leaves that differ between two configs."""
    found: set[str] = set()
    for key in [*a, *(k for k in b if k not in a)]:
        x, y = a.get(key, _MISSING), b.get(key, _MISSING)
        if isinstance(x, dict) and isinstance(y, dict):
            found |= _changed_paths(x, y, f"{prefix}{key}.")
        elif not _same(x, y):
            found.add(f"{prefix}{key}")
    return found


def config_diff(
    now: Mapping[Any, Any], want: Mapping[Any, Any], skip: set[str], prefix: str = ""
) -> list[str]:
    """Overrides that turn config `now` into `want`, leaving out the paths in `skip` (and under them)."""
    ops: list[str] = []
    for key, value in want.items():
        path = f"{prefix}{key}"
        old = now.get(key, _MISSING)
        if _skipped(path, skip):
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            ops += config_diff(old, value, skip, f"{path}.")
        elif not _same(old, value):
            ops += _set(path, old, value)
    for key, old in now.items():
        path = f"{prefix}{key}"
        if key not in want and not _skipped(path, skip):
            ops += _delete(path, old)
    return ops


def _set(path: str, old: Any, value: Any) -> list[str]:
    _check_path(path)
    if not _literal_keys(value):  # a dict whose keys a {k:v} value cannot hold: set key by key
        if old is not _MISSING or not isinstance(value, dict):
            raise _unwritable(path)
        return [f"++{path}={{}}", *config_diff({}, value, set(), f"{path}.")]
    retyped = (
        isinstance(old, (dict, list)) and isinstance(value, (dict, list)) and type(old) is not type(value)
    )
    return [f"~{path}"] * retyped + [f"++{path}={render(value)}"]


def _delete(path: str, old: Any) -> list[str]:
    if _schema_fields(path.rpartition(".")[0]) is not None:
        log.debug("from_run: %s is new since the run was recorded: today's default is kept", path)
        return []
    if old is None:
        log.warning("from_run: the recorded run had no %s; it stays (null), as Hydra cannot remove it", path)
        return []
    _check_path(path)
    return [f"~{path}"]


@functools.cache
def _fields(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _schema_fields(parent: str) -> dict[str, Any] | None:
    """The typed fields of the schema section at dotted path `parent` ("" is the top), or None when
    that section is an open mapping (a component group, `mlflow.tags`, ...)."""
    node: Any = HyraxConfig
    for part in [p for p in parent.split(".") if p]:
        node = _fields(node).get(part) if dataclasses.is_dataclass(node) else None
    return _fields(node) if isinstance(node, type) and dataclasses.is_dataclass(node) else None


def _check_path(path: str) -> None:
    if not all(_PATH_PART.match(part) for part in path.split(".")):
        raise _unwritable(path)


def _unwritable(path: str) -> HyraxError:
    return HyraxError(
        f"the recorded config has a key that a Hydra override cannot name: {path!r}",
        key=FROM_RUN,
        fix="rename that key in your model's or data set's parameters, or start the run without from_run",
    )


def _literal_keys(value: Any) -> bool:
    """Whether every key in `value` (nested) can be written inside a `{k:v}` value and stays a string."""
    if isinstance(value, dict):
        return all(
            isinstance(k, str)
            and _LITERAL_KEY.match(k)
            and k.lower() not in _TYPED_WORDS
            and _literal_keys(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_literal_keys(v) for v in value)
    return True
