"""From a data set's items to what the model receives: reading, collating and `to_tensor`.

Hyrax's contract, as its documentation and data sets use it:
- items are tensors, `(x, y)` pairs or dicts; dict items are put in the `{"data": {...}, "object_id":
  ...}` form (items already in that form pass through) and collated field by field, or by the data
  set's own `collate_fn`/`collate` and `collate_<field>` methods;
- a data set without a usable `__getitem__` (current Hyrax) is read through its `get_<field>(idx)`
  methods, for the fields `data_set.fields` names (all getters when it names none);
- the model's `to_tensor`/`prepare_inputs` packs dict batches, and whatever it returns (a tensor, a
  tuple, ...) is what the model's methods receive, with arrays turned into tensors. Without one,
  dict batches give `data["image"]` and, when present, `data["label"]`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data._utils.collate import default_collate

from hyrax.errors import HyraxError

DATA, OBJECT_ID = "data", "object_id"
Converter = Callable[[Any], Any]


class GetterItems:
    """Items of a data set read through its `get_<field>(idx)` methods, as current Hyrax reads them."""

    def __init__(self, data_set: Any, fields: Sequence[str] | None, id_field: str | None) -> None:
        available = sorted(
            n[4:] for n in dir(data_set) if n.startswith("get_") and callable(getattr(data_set, n))
        )
        wanted = list(fields) if fields else available
        missing = [f for f in wanted if f not in available]
        if missing:
            raise HyraxError(
                f"{type(data_set).__qualname__} has no get_{missing[0]}() for field '{missing[0]}'"
                f" (it has getters for: {', '.join(available) or 'nothing'})",
                key="data_set.fields",
                fix="name fields that have get_<field> methods",
            )
        self.getters = {f: getattr(data_set, f"get_{f}") for f in wanted}
        id_field = id_field or OBJECT_ID
        self.id_getter = getattr(data_set, f"get_{id_field}", None)
        self.data_set = data_set

    def __len__(self) -> int:
        return len(self.data_set)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        data = {field: getter(idx) for field, getter in self.getters.items()}
        object_id = str(self.id_getter(idx)) if self.id_getter is not None else str(idx)
        return {DATA: data, OBJECT_ID: object_id}


def uses_getters(data_set: Any, fields: Sequence[str] | None) -> bool:
    """Whether items must come from `get_<field>` methods: fields are named, or `__getitem__` is missing
    or gives nothing (Hyrax's CSV data set returns `{}` there)."""
    if isinstance(data_set, torch.utils.data.IterableDataset):
        return False
    if fields:
        return True
    if not hasattr(data_set, "__getitem__"):
        return True
    try:
        first = data_set[0]
    except (NotImplementedError, KeyError):
        return True
    return isinstance(first, Mapping) and not first


def normalize(item: Any, position: int) -> Any:
    """A dict item in the `{"data": ..., "object_id": ...}` form; other items as they are."""
    if not isinstance(item, Mapping):
        return item
    if DATA in item and isinstance(item[DATA], Mapping):
        object_id = item.get(OBJECT_ID, item[DATA].get(OBJECT_ID, position))
        return {DATA: item[DATA], OBJECT_ID: str(object_id)}
    return {DATA: dict(item), OBJECT_ID: str(item.get(OBJECT_ID, position))}


class Batch(dict):
    """A collated dict batch, `{"data": {field: values}, "object_id": [...]}`; a field asked for at the top
    (`batch["flux_g"]`, as the May 2025 documentation's `to_tensor` does) is read from `data`."""

    def __missing__(self, key: str) -> Any:
        data = self.get(DATA)
        if isinstance(data, Mapping) and key in data:
            return data[key]
        raise KeyError(key)


def collate_function(data_set: Any, configured: str | None = None) -> Callable[[list[tuple[int, Any]]], Any]:
    """Collation of `(position, item)` pairs into one batch: `data_loader.collate_fn` when configured (a
    dotted path; it gets the list of items), else the data set's own collate methods, else by field."""
    if configured:
        fn = _import_function(configured)
        return lambda pairs: fn([item for _, item in pairs])
    own = _own_collate(data_set)
    field_collates = {
        n[len("collate_") :]: getattr(data_set, n)
        for n in dir(data_set)
        if n.startswith("collate_") and n != "collate_fn" and callable(getattr(data_set, n))
    }

    def collate(pairs: list[tuple[int, Any]]) -> Any:
        items = [normalize(item, position) for position, item in pairs]
        if not isinstance(items[0], Mapping):
            if own is not None:
                return own(items)
            collated = default_collate(items)  # gives a list for tuple items: keep them tuples
            return tuple(collated) if isinstance(items[0], tuple) else collated
        datas = [item[DATA] for item in items]
        ids = [item[OBJECT_ID] for item in items]
        data = own(datas) if own is not None else _collate_fields(datas, field_collates)
        return Batch({DATA: data, OBJECT_ID: ids})

    return collate


def default_collate_items(items: list[Any]) -> Any:
    """The default collation of a list of items (what `data_loader.collate_fn` may name, as Hyrax's
    `iterable_dataset_collate`)."""
    return collate_function(None)(list(enumerate(items)))


def _import_function(path: str) -> Callable[[list[Any]], Any]:
    from hyrax.resolve import import_dotted

    fn = import_dotted(path)
    if not callable(fn):
        raise HyraxError(
            f"cannot find a collate function '{path}'",
            key="data_loader.collate_fn",
            fix="name a function by its dotted path (mypkg.module.collate), or set it to null",
        )
    return fn


def _own_collate(data_set: Any) -> Callable[[list[Any]], Any] | None:
    for name in ("collate_fn", "collate"):
        fn = getattr(data_set, name, None)
        if callable(fn):
            return fn
    return None


def _collate_fields(datas: list[Mapping[str, Any]], field_collates: Mapping[str, Callable]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for field in datas[0]:
        if field in field_collates:
            data.update(field_collates[field](datas))
        else:
            data[field] = stack_values([d[field] for d in datas])
    return data


def stack_values(values: list[Any]) -> Any:
    """One field of a batch: equal-shaped arrays and numbers stacked into an array, anything else a list."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(v.shape) for v in values if isinstance(v, torch.Tensor)}
        return (
            torch.stack(values)
            if len(shapes) == 1 and len(values) == sum(isinstance(v, torch.Tensor) for v in values)
            else values
        )
    if isinstance(first, (np.ndarray, np.generic, int, float, bool)) and not isinstance(first, str):
        try:
            stacked = np.asarray(values)
        except ValueError:  # ragged
            return values
        return stacked if stacked.dtype != object else values
    return values


def make_converter(model_cls: type, first_item: Any, nan_mode: Any, nan_quantile: float = 0.05) -> Converter:
    """The function from a collated batch to what the model receives."""
    from hyrax.models.contract import TO_TENSOR_NAMES, find_method

    to_tensor = find_method(model_cls, TO_TENSOR_NAMES)
    item = normalize(first_item, 0)
    if isinstance(item, Mapping) and to_tensor is None and "image" not in item[DATA]:
        raise HyraxError(
            f"data set items are dicts with fields {sorted(item[DATA])} but no 'image' field, and "
            f"{model_cls.__qualname__} has no to_tensor",
            key="model",
            fix=f"define @staticmethod to_tensor(data_dict) (or prepare_inputs) on {model_cls.__qualname__} "
            "(or give items 'image' and 'label' fields)",
        )

    def convert(batch: Any) -> Any:
        if isinstance(batch, Mapping):
            batch = to_tensor(batch) if to_tensor is not None else _image_and_label(batch[DATA])
        batch = as_tensors(batch)
        if isinstance(batch, tuple) and batch:
            return (apply_nan_mode(batch[0], nan_mode, nan_quantile), *batch[1:])
        return apply_nan_mode(batch, nan_mode, nan_quantile)

    return convert


def apply_nan_mode(x: Any, mode: Any, quantile: float = 0.05) -> Any:
    """Replace NaNs in an input batch as `data_set.nan_mode` says (null or false leaves them)."""
    if mode in (None, False, "none") or not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        return x
    if mode == "zero":
        return torch.nan_to_num(x, nan=0.0)
    if mode == "quantile":
        flat = x.reshape(len(x), -1)
        fill = torch.nanquantile(flat, quantile, dim=1, keepdim=True).nan_to_num(0.0)
        return torch.where(torch.isnan(flat), fill, flat).reshape(x.shape)
    raise HyraxError(
        f"unknown nan_mode '{mode}'", key="data_set.nan_mode", fix="use null (or false), zero or quantile"
    )


def _image_and_label(data: Mapping[str, Any]) -> Any:
    return (data["image"], data["label"]) if "label" in data else data["image"]


def as_tensors(value: Any) -> Any:
    """Arrays as tensors, keeping the structure: a tuple stays a tuple, a list of tensors is stacked."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.float64 else value
    if isinstance(value, tuple):
        return tuple(as_tensors(v) for v in value)
    if isinstance(value, Mapping):
        return {k: as_tensors(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in value):
        parts = [torch.as_tensor(v) for v in value]
        if len({tuple(p.shape) for p in parts}) == 1:
            return as_tensors(torch.stack(parts))  # per-item tensors: one batch
        return tuple(as_tensors(p) for p in parts)
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: leave it to the model
        return value
    if array.dtype == object or array.dtype.kind in "USO":
        return value
    return as_tensors(torch.as_tensor(array))


def strip_batch_axis(batch: Any) -> Any:
    """One item out of a model-ready batch of one: the batch axis removed from every tensor."""
    if isinstance(batch, torch.Tensor):
        return batch[0] if batch.dim() > 0 and batch.shape[0] == 1 else batch
    if isinstance(batch, tuple):
        return tuple(strip_batch_axis(v) for v in batch)
    if isinstance(batch, list):
        return [strip_batch_axis(v) for v in batch]
    if isinstance(batch, Mapping):
        return {k: strip_batch_axis(v) for k, v in batch.items()}
    return batch
