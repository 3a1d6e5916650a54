"""The run's data set as an MLflow dataset input: what fills the "Datasets" column of MLflow's UI.

The record names the data set's class, where its data is (when its config says), a short digest that
tells data sets apart (class, config and length: not the data's bytes, which would mean reading it all),
its size and splits, and the structure of one item. It is built from MLflow's entity classes and
logged with `MlflowClient.log_inputs`, not the fluent `mlflow.log_input`, which needs an active run.

MLflow keeps one dataset record per (name, digest) in an experiment: a later run with the same digest
points at the first run's record (its profile included), so what is particular to a run (its split
sizes) also goes into a tag on the run's input edge (`hyrax.tags.SPLITS`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from hyrax.redact import redact
from hyrax.tags import SPLITS

log = logging.getLogger("hyrax")

SOURCE_TYPE = "hyrax"  # MLflow accepts any source type for an entity; its UI shows it as given
CONTEXT = "training"  # the value of MLflow's context tag (mlflow.data.context)
LOCATION_KEYS = ("data_location", "data_dir", "path", "file")
DIGEST_CHARS = 10
MAX_SCHEMA_ENTRIES = 20  # fields of a dict or tuple item described in the schema
MAX_SCHEMA_DEPTH = 3


def dataset_input(data_set: Any, config_node: Mapping[str, Any], split_sizes: Mapping[str, int]) -> Any:
    """An `mlflow.entities.DatasetInput` describing `data_set` (built from `config_node`) and its splits."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    path = class_path(data_set, config_node)
    rows = _length(data_set)
    splits = {str(k): int(v) for k, v in split_sizes.items()}
    dataset = Dataset(
        name=type(data_set).__qualname__,
        digest=digest(path, config_node, rows),
        source_type=SOURCE_TYPE,
        source=_source(path, config_node),
        schema=_schema(data_set, rows),
        profile=json.dumps({**({"num_rows": rows} if rows is not None else {}), "splits": splits}),
    )
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT), InputTag(SPLITS, json.dumps(splits))]
    return DatasetInput(dataset=dataset, tags=tags)


def log_dataset(
    client: Any, run_id: str, data_set: Any, config_node: Mapping[str, Any], split_sizes: Mapping[str, int]
) -> None:
    """Record `data_set` as the run's input; a failure is a warning, never an error."""
    try:
        client.log_inputs(run_id, datasets=[dataset_input(data_set, config_node, split_sizes)])
    except Exception as e:
        log.warning("could not record the data set as an input of MLflow run %s: %s", run_id, e)


def class_path(data_set: Any, config_node: Mapping[str, Any]) -> str:
    """The data set's class as the config names it (`_target_`), else its module and qualified name."""
    target = config_node.get("_target_")
    if target:
        return str(target)
    cls = type(data_set)
    return f"{cls.__module__}.{cls.__qualname__}"


def digest(path: str, config_node: Mapping[str, Any], rows: int | None) -> str:
    """A short stable hash of the class path, the data set's config and its number of items."""
    config = json.dumps({str(k): str(v) for k, v in config_node.items()}, sort_keys=True)
    text = f"{path}\n{config}\n{rows}"
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def _length(data_set: Any) -> int | None:
    """`len(data_set)`, or None when it has no length (an iterable data set) or cannot say."""
    try:
        return len(data_set)
    except Exception:
        return None


def _source(path: str, config_node: Mapping[str, Any]) -> str:
    """The source as JSON: the class path and, when the config has one, the data's location."""
    source = {"class": path}
    location = next((config_node.get(k) for k in LOCATION_KEYS if config_node.get(k) not in (None, "")), None)
    if location is not None:
        source["location"] = redact(str(location))
    return json.dumps(source)


def _schema(data_set: Any, rows: int | None) -> str | None:
    """The structure of the data set's first item as JSON, or None when it cannot be read."""
    if not rows or not hasattr(data_set, "__getitem__"):
        return None
    try:
        return json.dumps({"item": describe(data_set[0])})
    except Exception as e:
        log.debug("no schema for the data set: its first item could not be read: %s", e)
        return None


def describe(value: Any, depth: int = 0) -> Any:
    """The structure of `value`: tensors and arrays by type, dtype and shape; containers by their parts."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return {"type": type(value).__name__, "dtype": str(value.dtype), "shape": list(value.shape)}
    if depth >= MAX_SCHEMA_DEPTH:
        return {"type": type(value).__name__}
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_SCHEMA_ENTRIES]
        return {"type": "dict", "fields": {str(k): describe(v, depth + 1) for k, v in items}}
    if isinstance(value, (tuple, list)):
        return {
            "type": type(value).__name__,
            "items": [describe(v, depth + 1) for v in value[:MAX_SCHEMA_ENTRIES]],
        }
    return {"type": type(value).__name__}
