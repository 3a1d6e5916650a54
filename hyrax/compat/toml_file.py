"""Reading a Hyrax config file (`hyrax_config.toml`) as Hydra overrides.

The Hyrax layout maps onto ours table by table:

    [model] name = "pkg.MyModel"        -> model=pkg.MyModel         (likewise data_set, criterion, ...)
    [model] / [model.MyModel] keys      -> model.* / model.MyModel.*  (what the class reads)
    ["torch.optim.SGD"] lr = 0.01       -> optimizer.lr=0.01          (the chosen class's own table)
    [train] epochs, resume              -> train.*; experiment_name, run_name -> mlflow.*
    [general], [data_loader], [mlflow]  -> the sections of the same name
    [data_request.train.<name>]         -> data_set=<dataset_class> and its data_location, fields, ...;
                                           its dataset_config keys go where Hyrax puts them
    [split] train/validate/test         -> train.split.*
    [infer] / [test] model_weights_file -> ckpt_path

Tables of Hyrax features hyrax-run does not have are named in a warning; any other table is an
error naming the closest known one.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyrax.compat.files import read_toml
from hyrax.compat.overrides import override
from hyrax.config import COMPONENT_GROUPS, DataLoaderConfig, GeneralConfig
from hyrax.errors import HyraxError

log = logging.getLogger("hyrax")
USER_CONFIG_FILE = "hyrax_config.toml"
# Hyrax tables for features hyrax-run does not have: read, named in a warning, not used.
UNUSED_HYRAX_TABLES = (
    "download",
    "onnx",
    "vector_db",
    "results",
    "reduce_dimensions",
    "umap",
    "visualize",
    "visualize_v2",
    "engine",
    "balance",
    "label",
    "infer_stream",
    "config_version",
    "model_inputs",
)
TRAIN_ALIASES = {
    "experiment_name": "mlflow.experiment",
    "run_name": "mlflow.run_name",
    "shuffle": "data_loader.shuffle",
}
TRAIN_UNUSED = ("weights_filename", "model_weights_file", "split")
DATA_REQUEST_KEYS = ("data_location", "fields", "primary_id_field")  # same names under data_set


def default_config_file() -> Path | None:
    """`./hyrax_config.toml`, which Hyrax reads when no file is named."""
    candidate = Path.cwd() / USER_CONFIG_FILE
    return candidate if candidate.is_file() else None


def toml_overrides(path: Path) -> list[str]:
    """The Hydra overrides a Hyrax-layout TOML file stands for."""
    return hyrax_overrides(read_toml(path), str(path))


def hyrax_overrides(
    tables: Mapping[str, Any], source: str, chosen: Mapping[str, Any] | None = None
) -> list[str]:
    """Overrides for a Hyrax-layout config held as nested dicts (a TOML file, or `set_config` values).

    `chosen` names the classes already chosen per group, for tables named after a class.
    """
    chosen = {
        **(chosen or {}),
        **{
            g: tables[g]["name"]
            for g in COMPONENT_GROUPS
            if isinstance(tables.get(g), Mapping) and tables[g].get("name")
        },
    }
    out: list[str] = []
    unused: list[str] = []
    for table, value in tables.items():
        if table in COMPONENT_GROUPS and isinstance(value, Mapping):
            out += _group(table, value)
        elif table in _SECTIONS:
            out += _SECTIONS[table](value, unused)
        elif table in UNUSED_HYRAX_TABLES:
            unused.append(f"[{table}]")
        elif isinstance(value, Mapping) and (group := _group_choosing(table, chosen)):
            out += [override(f"{group}.{k}", v, add=True) for k, v in _flat(value)]
        elif isinstance(value, Mapping) and _is_class_path(table):
            unused.append(f'["{table}"] (not the chosen class)')
        elif isinstance(value, Mapping) and _is_package_of(table, chosen.values()):
            out += [override(f"{table}.{k}", v, add=True) for k, v in _flat(value)]
        else:
            raise _unknown(table, source)
    if unused:
        log.warning("%s: hyrax-run does not use %s", source, ", ".join(unused))
    return out


def _group(group: str, table: Mapping[str, Any]) -> list[str]:
    out = [f"{group}={table['name']}"] if table.get("name") else []
    return out + [override(f"{group}.{k}", v, add=True) for k, v in _flat(table) if k != "name"]


def _typed(section: str, schema: type) -> Any:
    known = set(schema.__dataclass_fields__)

    def convert(table: Mapping[str, Any], unused: list[str]) -> list[str]:
        out = []
        for key, value in table.items():
            if key in known:
                out.append(override(f"{section}.{key}", value))
            else:
                unused.append(f"{section}.{key}")
        return out

    return convert


def _train(table: Mapping[str, Any], unused: list[str]) -> list[str]:
    out = []
    for key, value in table.items():
        if key in TRAIN_ALIASES:
            if value is not False:
                out.append(override(TRAIN_ALIASES[key], value))
        elif key in TRAIN_UNUSED:
            unused.append(f"train.{key}")
        else:
            out.append(override(f"train.{key}", value))  # the schema names a wrong key
    return out


def _weights(section: str) -> Any:
    def convert(table: Mapping[str, Any], unused: list[str]) -> list[str]:
        out = []
        for key, value in table.items():
            if key == "model_weights_file":
                if value:
                    out.append(override("ckpt_path", value))
            else:
                unused.append(f"{section}.{key}")
        return out

    return convert


def _split(table: Mapping[str, Any], unused: list[str]) -> list[str]:
    return [override(f"train.split.{k}", v) for k, v in table.items()]


def data_request(request: Mapping[str, Any], unused: list[str] | None = None) -> list[str]:
    """Current Hyrax's `data_request`: its train data set becomes `data_set` (Hyrax splits one data set
    here, so validate/infer requests must name the same class)."""
    definitions = [
        (verb, name, d)
        for verb, group in request.items()
        if isinstance(group, Mapping)
        for name, d in group.items()
        if isinstance(d, Mapping)
    ]
    if not definitions:
        return []
    _, _, first = next((x for x in definitions if x[0] == "train"), definitions[0])
    others = {d.get("dataset_class") for _, _, d in definitions} - {first.get("dataset_class")}
    if others:
        raise HyraxError(
            f"data_request names several data set classes ({', '.join(sorted(others))} besides "
            f"{first.get('dataset_class')}); hyrax-run splits one data set",
            key="data_request",
            fix="name one dataset_class; set the split with train.split.* or data_set.*_size",
        )
    out = [f"data_set={first['dataset_class']}"]
    for key in DATA_REQUEST_KEYS:
        if first.get(key) not in (None, False):
            out.append(override(f"data_set.{key}", first[key], add=True))
    return out + _dataset_config(first.get("dataset_config") or {})


def _dataset_config(settings: Mapping[str, Any]) -> list[str]:
    """As Hyrax merges a request's `dataset_config` into the config its data set gets: a class's table goes
    under `data_set`, any other key to the top level (`config.get("n_objects")` reads it there)."""
    out = []
    for key, value in settings.items():
        prefix = "data_set." if isinstance(value, Mapping) and key[:1].isupper() else ""
        out += [override(f"{prefix}{k}", v, add=True) for k, v in _flat({key: value})]
    return out


def _flat(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping) and value:
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _group_choosing(table: str, chosen: Mapping[str, Any]) -> str | None:
    """The group whose chosen class the table is named after (`["torch.optim.SGD"]`), if any."""
    from hyrax.resolve import locate_target

    for group, name in chosen.items():
        if not isinstance(name, str) or not name:
            continue
        if name == table:
            return group
        if "." in table and _quiet(locate_target, group, name) is _quiet(locate_target, group, table):
            return group
    return None


def _is_class_path(name: str) -> bool:
    from hyrax.resolve import import_dotted

    return "." in name and isinstance(_quiet(import_dotted, name), type)


def _is_package_of(table: str, chosen: Any) -> bool:
    """A table named after the package of a chosen class (`[mypkg.MyModel]`, as Hyrax packages write)."""
    return any(isinstance(c, str) and "." in c and c.split(".")[0] == table.split(".")[0] for c in chosen)


def _quiet(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (ImportError, HyraxError):
        return _NOTHING


_NOTHING = object()


def _unknown(table: str, source: str) -> HyraxError:
    known = sorted([*COMPONENT_GROUPS, *_SECTIONS, *UNUSED_HYRAX_TABLES])
    close = difflib.get_close_matches(table, known, n=1)
    hint = f" Did you mean [{close[0]}]?" if close else ""
    return HyraxError(
        f"{source}: unknown table [{table}].{hint}",
        key=table,
        fix=f"use Hyrax's tables ({', '.join(known)}), or a class's own table named by its "
        'full path ("torch.optim.SGD") or under its group ([model.MyModel])',
    )


_SECTIONS = {
    "train": _train,
    "general": _typed("general", GeneralConfig),
    "data_loader": _typed("data_loader", DataLoaderConfig),
    "mlflow": lambda table, unused: [override(f"mlflow.{k}", v) for k, v in table.items()],  # ours: checked
    "infer": _weights("infer"),
    "test": _weights("test"),
    "split": _split,
    "data_request": data_request,
}
