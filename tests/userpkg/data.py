"""User data sets: dict items, image/label items, slow items, and an iterable stream."""

import time

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from hyrax.data_sets import HyraxDataset


def _cluster(i: int, features: int = 8) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(i)
    label = i % 3
    return (rng.normal(size=features) + 3.0 * label).astype(np.float32), label


class TelescopeData(HyraxDataset, Dataset):
    """Items are dicts of named measurements, as in the Hyrax docs; the model's to_tensor packs them."""

    def __init__(self, config):
        super().__init__(config)
        self.n = config["data_set"].get("n", 240)

    def __getitem__(self, i):
        x, label = _cluster(i)
        return {
            "flux_g": x[:4],
            "flux_r": x[4:],
            "mag_g": np.float32(x.mean()),
            "label": label,
            "object_id": f"obj{i:04d}",
        }

    def __len__(self):
        return self.n

    def ids(self):
        return (f"obj{i:04d}" for i in range(self.n))


class ImageLabelData(HyraxDataset, Dataset):
    """Items are {"image": tensor, "label": int}: no to_tensor needed."""

    def __init__(self, config, n: int = 240, delay: float = 0.0):
        super().__init__(config)
        self.n, self.delay = n, delay

    def __getitem__(self, i):
        if self.delay:
            time.sleep(self.delay)
        x, label = _cluster(i)
        return {"image": torch.from_numpy(x), "label": label}

    def __len__(self):
        return self.n


class NoImageData(HyraxDataset, Dataset):
    """Dict items with neither 'image' nor a model to_tensor: Hyrax must ask for to_tensor."""

    def __init__(self, config):
        super().__init__(config)

    def __getitem__(self, i):
        return {"pixels": torch.zeros(8), "target": 0}

    def __len__(self):
        return 20


class PairStream(HyraxDataset, IterableDataset):
    """An iterable data set of (x, y) pairs."""

    def __init__(self, config, n: int = 300):
        super().__init__(config)
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            x, label = _cluster(i)
            yield torch.from_numpy(x), label


class UnlabeledStream(HyraxDataset, IterableDataset):
    """An iterable data set of inputs only."""

    def __init__(self, config, n: int = 50):
        super().__init__(config)
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield torch.from_numpy(_cluster(i)[0])
