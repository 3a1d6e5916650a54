"""Models in the styles Hyrax ships and documents: read settings from config tables, own training steps,
`to_tensor`/`prepare_inputs` packing dict items, unsupervised losses, a model-defined criterion."""

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from hyrax.models import hyrax_model


def _conv_out(size, kernel, stride=1, padding=0):
    return (size + 2 * padding - kernel) // stride + 1


@hyrax_model
class ImageCNN(nn.Module):
    """Like Hyrax's CNN of January 2026: `data_sample` is one (image, label) item, forward unpacks the
    whole batch, train/validate/test/infer spelled `*_batch`, classes from its config table."""

    def __init__(self, config, data_sample=None):
        super().__init__()
        self.config = config
        image_sample = data_sample[0]
        channels, height, width = image_sample.shape
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6 * (height // 2) * (width // 2), config["model"]["ImageCNN"]["output_classes"])

    def forward(self, x):
        x, _ = x  # the batch as prepare_inputs made it: labels ride along
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))

    def train_batch(self, batch):
        _, labels = batch
        self.optimizer.zero_grad()
        loss = self.criterion(self(batch), labels)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate_batch(self, batch):
        _, labels = batch
        return {"loss": self.criterion(self(batch), labels).item()}

    def test_batch(self, batch):
        _, labels = batch
        return {"loss": self.criterion(self(batch), labels).item(),
                "accuracy": (self(batch).argmax(1) == labels).float().mean().item()}

    def infer_batch(self, batch):
        return self(batch)

    @staticmethod
    def prepare_inputs(data_dict):
        import numpy as np

        data = data_dict["data"]
        return np.asarray(data["image"], dtype=np.float32), np.asarray(data.get("label", []), dtype=np.int64)


@hyrax_model
class BatchImageCNN(ImageCNN):
    """Like Hyrax's current CNN: it expects `data_sample` as a batch of one (train.data_sample=batch)."""

    def __init__(self, config, data_sample=None):
        nn.Module.__init__(self)
        _, channels, height, width = data_sample[0].shape
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.fc = nn.Linear(6 * (height // 2) * (width // 2), config["model"]["BatchImageCNN"]["output_classes"])


@hyrax_model
class ImageAutoencoder(nn.Module):
    """Like Hyrax's autoencoder: unsupervised, image-only `to_tensor`, sizes from `data_sample.shape`."""

    table = "ImageAutoencoder"

    def __init__(self, config, data_sample=None):
        super().__init__()
        self._build(config, *data_sample.shape)

    def _build(self, config, channels, height, width):
        hidden = config["model"][self.table]["base_channel_size"]
        latent = config["model"][self.table]["latent_dim"]
        self.size = (height, width)
        self.encoder = nn.Sequential(nn.Conv2d(channels, hidden, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(),
                                     nn.Linear(hidden * _conv_out(height, 3, 2, 1) * _conv_out(width, 3, 2, 1),
                                               latent))
        self.decoder = nn.Sequential(nn.Linear(latent, channels * height * width), nn.Unflatten(1, (channels, height,
                                                                                                    width)))

    def forward(self, batch):
        return self.encoder(batch)

    def _loss(self, batch):
        return F.mse_loss(self.decoder(self(batch)), batch, reduction="none").sum(dim=[1, 2, 3]).mean()

    def train_step(self, batch):
        loss = self._loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate_step(self, batch):
        return {"loss": self._loss(batch).item()}

    def test_step(self, batch):
        return {"loss": self._loss(batch).item()}

    def infer_batch(self, batch):
        return self(batch)

    @staticmethod
    def to_tensor(data_dict):
        import numpy as np

        return np.asarray(data_dict.get("data", {}).get("image"), dtype=np.float32)


@hyrax_model
class BatchAutoencoder(ImageAutoencoder):
    """Like Hyrax's current autoencoder: `_, C, H, W = data_sample.shape` (train.data_sample=batch)."""

    table = "BatchAutoencoder"

    def __init__(self, config, data_sample=None):
        nn.Module.__init__(self)
        _, channels, height, width = data_sample.shape
        self._build(config, channels, height, width)


@hyrax_model
class Loopback(nn.Module):
    """Like Hyrax's test-fixture loopback model: returns its input, trains nothing, loss 0."""

    def __init__(self, config, data_sample=None):
        super().__init__()
        self.unused_module = nn.Linear(1, 1)  # an optimizer needs one weight
        self.config = config

    def forward(self, x):
        if isinstance(x, (tuple, list)):
            x, _ = x
        return x

    def train_batch(self, batch):
        self.forward(batch)
        return {"loss": 0.0}

    def validate_batch(self, batch):
        self.forward(batch)
        return {"loss": 0.0}

    def test_batch(self, batch):
        return {"loss": 0.0}

    def infer_batch(self, batch):
        return self.forward(batch)

    @staticmethod
    def prepare_inputs(data_dict):
        import numpy as np

        data = data_dict.get("data")
        return data.get("image", np.array([], dtype=np.float32)), data.get("label", np.array([], dtype=np.float32))


class NTXent(nn.Module):
    """The normalized temperature-scaled cross entropy of contrastive learning."""

    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature

    def forward(self, z1, z2):
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        similarity = z @ z.T / self.temperature
        n = len(z1)
        similarity.fill_diagonal_(float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
        return F.cross_entropy(similarity, targets)


@hyrax_model
class ContrastiveNet(nn.Module):
    """Like Hyrax's SimCLR: it sets its own `self.criterion` (a contrastive loss that Hyrax must keep)."""

    def __init__(self, config, data_sample=None):
        super().__init__()
        table = config["model"]["ContrastiveNet"]
        features = int(np.prod(data_sample.shape))
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.ReLU())
        self.projection = nn.Linear(32, table["projection_dimension"])
        self.criterion = NTXent(table["temperature"])

    def forward(self, x):
        return self.encoder(x)

    def _views(self, batch):
        return batch + 0.1 * torch.randn_like(batch), batch + 0.1 * torch.randn_like(batch)

    def train_step(self, batch):
        a, b = self._views(batch)
        loss = self.criterion(self.projection(self(a)), self.projection(self(b)))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate_step(self, batch):
        a, b = self._views(batch)
        return {"loss": self.criterion(self.projection(self(a)), self.projection(self(b))).item()}

    @staticmethod
    def to_tensor(data_dict):
        import numpy as np

        return np.asarray(data_dict["data"]["image"], dtype=np.float32)


@hyrax_model
class SeedAutoencoder(nn.Module):
    """Exactly seed 001's unsupervised model: `__init__(config, data_sample)`, `train_step`, `to_tensor`
    packing named fluxes; no labels and no validate step."""

    def __init__(self, config, data_sample):
        super().__init__()
        n = data_sample.shape[0]
        self.encode = nn.Sequential(nn.Linear(n, 4), nn.Tanh())
        self.decode = nn.Linear(4, n)

    def forward(self, batch):
        return self.encode(batch)

    def train_step(self, batch):
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.decode(self(batch)), batch)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    @staticmethod
    def to_tensor(data_dict):
        import numpy as np

        g = np.array(data_dict["data"]["flux_g"])
        r = np.array(data_dict["data"]["flux_r"])
        return np.concatenate([g, r], axis=1).astype(np.float32)


@hyrax_model
class ShapeNet(nn.Module):
    """Seed 000's model: `__init__(config, shape)`, `train_step` returning per-item losses."""

    def __init__(self, config, shape):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)

    def train_step(self, batch):
        x, y = batch
        self.optimizer.zero_grad()
        losses = F.cross_entropy(self(x), y, reduction="none")
        losses.mean().backward()
        self.optimizer.step()
        return {"loss": list(losses.detach())}


@hyrax_model
class TabularNet(nn.Module):
    """A model for a table read through getters: `prepare_inputs` stacks the feature columns."""

    features = ("f0", "f1", "f2")

    def __init__(self, config, data_sample=None):
        super().__init__()
        x, _ = data_sample
        self.net = nn.Sequential(nn.Linear(x.shape[0], 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)

    @staticmethod
    def prepare_inputs(data_dict):
        import numpy as np

        data = data_dict["data"]
        x = np.stack([np.asarray(data[c], dtype=np.float32) for c in ("f0", "f1", "f2")], axis=1)
        return x, np.asarray(data["label"], dtype=np.int64)


@hyrax_model
class ImageOnlyCNN(nn.Module):
    """Like the current documentation notebook's model: `image_sample, _ = data_sample` with the batch axis
    (train.data_sample=batch), forward unpacks, `prepare_inputs` hands the collated fields over."""

    def __init__(self, config, data_sample=None):
        super().__init__()
        image_sample, _ = data_sample
        c, h, w = image_sample.shape[1:]
        self.net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, 5))

    def forward(self, batch):
        image, _ = batch
        return self.net(image)

    @staticmethod
    def prepare_inputs(data_dict):
        return data_dict["data"]["image"], data_dict["data"]["label"]

    def train_batch(self, batch):
        _, labels = batch
        self.optimizer.zero_grad()
        loss = self.criterion(self.forward(batch), labels)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def validate_batch(self, batch):
        _, labels = batch
        return {"loss": self.criterion(self.forward(batch), labels).item()}

    def infer_batch(self, batch):
        return self.forward(batch)
