"""Data sets in the styles Hyrax ships and documents: settings from config tables, `{"data": ...,
"object_id": ...}` items, metadata tables, getter-only data sets, a test-fixture data set."""

import numpy as np
import pandas as pd
from torch.utils.data import Dataset, IterableDataset

from hyrax.data_sets import HyraxDataset


def _images(size, shape, seed, labels):
    """Random images whose mean shifts with their label, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    label_of = rng.choice(labels, size=size) if labels else None
    images = rng.random((size, *shape), dtype=np.float32)
    if label_of is not None:
        images += np.asarray(label_of, dtype=np.float32).reshape(-1, *[1] * len(shape))
    return images, label_of


class _RandomImagesBase:
    """Reads its settings from config["data_set"]["RandomImages"], as Hyrax's random data sets do."""

    def __init__(self, config, data_location=None):
        table = config["data_set"]["RandomImages"]
        self.data, self.labels = _images(table["size"], tuple(table["shape"]), table["seed"],
                                         list(table["provided_labels"]))
        start = np.random.default_rng(table["seed"]).integers(100)
        self.id_list = np.arange(start, start + table["size"])
        meta = {"object_id": [str(i) for i in self.id_list]}
        for i, field in enumerate(table["metadata_fields"]):
            meta[field] = np.arange(table["size"], 0, -1) / (i + 2)
        super().__init__(config, pd.DataFrame(meta), "object_id")
        self.data_location = data_location

    def get_image(self, idx):
        return self.data[idx]

    def get_label(self, idx):
        return None if self.labels is None else self.labels[idx]

    def get_object_id(self, idx):
        return str(self.id_list[idx])

    def _item(self, idx):
        item = {"data": {"index": idx, "object_id": self.get_object_id(idx), "image": self.get_image(idx)},
                "object_id": self.get_object_id(idx)}
        if self.labels is not None:
            item["data"]["label"] = self.get_label(idx)
        return item


class RandomImages(_RandomImagesBase, HyraxDataset, Dataset):
    """Map-style random images with labels and a metadata table, items in Hyrax's data form."""

    def __getitem__(self, idx):
        return self._item(idx)

    def __len__(self):
        return len(self.data)


class RandomImagesIterable(_RandomImagesBase, HyraxDataset, IterableDataset):
    """The same images as a stream of unknown length."""

    def __iter__(self):
        for idx in range(len(self.data)):
            yield self._item(idx)


class FixtureRandom(HyraxDataset, Dataset):
    """Like Hyrax's test-fixture data set: `__init__(config, data_directory)`, settings straight from
    config["data_set"], plain array items, ids from its own list and a metadata table."""

    def __init__(self, config, data_directory):
        size = config["data_set"]["size"]
        length = config["data_set"]["dimension_1_length"] if "dimension_1_length" in config["data_set"] else 2
        rng = np.random.default_rng(config["data_set"]["seed"])
        self.data = rng.random((size, length), np.float32)
        start = rng.integers(100)
        self.id_list = list(range(start, start + size))
        self.data_directory = data_directory
        super().__init__(config, pd.DataFrame({"object_id": np.array(list(self.ids()))}))

    def __getitem__(self, idx):
        return np.array(self.data[idx])

    def __len__(self):
        return len(self.data)

    def ids(self):
        for i in self.id_list:
            yield str(i)


class SurveyData(HyraxDataset):
    """Like the current documentation notebook's data set: no `__getitem__`, one `get_<field>` per field,
    settings read with `config.get` from the top of the config (where Hyrax merges a data request's
    `dataset_config`), a `data_location` it does not need."""

    def __init__(self, config, data_location=None):
        n_objects = config.get("n_objects", 60)
        rng = np.random.default_rng(7)
        self.labels = rng.integers(0, 3, size=n_objects, dtype=np.int64)
        self.images = (rng.normal(size=(n_objects, 3, 6, 6)) + self.labels.reshape(-1, 1, 1, 1)).astype(np.float32)
        super().__init__(config)

    def __len__(self):
        return len(self.images)

    def get_image(self, idx):
        return self.images[idx]

    def get_label(self, idx):
        return self.labels[idx]

    def get_object_id(self, idx):
        return f"obj-{idx:05d}"


class CSVTable(HyraxDataset):
    """Like Hyrax's CSV data set: a getter per column, `__getitem__` returning nothing, not a torch Dataset."""

    def __init__(self, config, data_location=None):
        if data_location is None:
            raise ValueError("A `data_location` path to a .csv file must be provided.")
        self.table = pd.read_csv(data_location)
        for column in self.table.columns:
            setattr(self, f"get_{column}", lambda idx, c=column: self.table[c].iloc[idx])
        super().__init__(config)

    def __getitem__(self, idx):
        return {}

    def __len__(self):
        return len(self.table)

    def sample_data(self):
        return {"data": {c: self.table[c].iloc[0] for c in self.table.columns}}


class FluxData(HyraxDataset, Dataset):
    """Seed 001's dict items: named fluxes, no labels; the model's `to_tensor` packs them."""

    def __init__(self, config):
        super().__init__(config)
        rng = np.random.default_rng(3)
        base = rng.normal(size=(200, 1)).astype(np.float32)
        self.g = base + 0.1 * rng.normal(size=(200, 3)).astype(np.float32)
        self.r = 2 * base + 0.1 * rng.normal(size=(200, 3)).astype(np.float32)

    def __getitem__(self, i):
        return {"flux_g": self.g[i], "flux_r": self.r[i], "mag_g": np.float32(self.g[i].mean()),
                "object_id": f"star{i}"}

    def __len__(self):
        return len(self.g)


class LabeledVectors(HyraxDataset, Dataset):
    """Seed 000's `{"image", "label"}` items, used without any `to_tensor`."""

    def __init__(self, config):
        super().__init__(config)
        rng = np.random.default_rng(5)
        self.y = rng.integers(0, 3, size=150)
        self.x = (rng.normal(size=(150, 6)) + 2.0 * self.y[:, None]).astype(np.float32)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": int(self.y[i])}

    def __len__(self):
        return len(self.x)


def write_csv(path, n=120):
    """A CSV with three feature columns, a label column and an id column, for `CSVTable`."""
    rng = np.random.default_rng(11)
    label = rng.integers(0, 2, size=n)
    frame = pd.DataFrame({"object_id": [f"row{i}" for i in range(n)], "label": label,
                          **{f"f{j}": rng.normal(size=n) + 1.5 * label for j in range(3)}})
    frame.to_csv(path, index=False)
    return path
