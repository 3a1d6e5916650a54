"""Training settings observed in their effect, not only in a run that finishes: gradient clipping bounds
each update, and the learning rate logged per epoch follows the configured schedule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from hyrax import Hyrax
from hyrax.models import hyrax_model
from hyrax.train import checkpoint

LR = 0.1
SMALL = "data_set.n_samples=200"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@hyrax_model
class StartKeepingLinear(nn.Module):
    """A linear classifier that keeps a copy of its first weights, to measure how far training moved them."""

    def __init__(self, data_sample, num_outputs: int = 4):
        super().__init__()
        self.net = nn.Linear(data_sample[0].shape[0], num_outputs)
        self.initial = {k: v.detach().clone() for k, v in self.state_dict().items()}

    def forward(self, x):
        return self.net(x)


def one_sgd_step(*overrides: str) -> float:
    """How far (L2 norm over all weights) one plain SGD step with learning rate 10 moved the weights.

    100 items: the 80 of the train split are one batch of at most 128, so one epoch is one step.
    """
    h = Hyrax(
        overrides=[
            "model=StartKeepingLinear",
            "data_set.n_samples=100",
            "train.batch_size=128",
            "train.epochs=1",
            "optimizer=sgd",
            "optimizer.momentum=0",
            "optimizer.lr=10",
            "mlflow.enabled=false",
            *overrides,
        ]
    )
    model = h.train()
    state = checkpoint.load(h.last_run_dir / "checkpoints" / checkpoint.LAST)
    assert state["loop"]["step"] == 1, "the run was meant to be exactly one optimizer step"
    moved = [state["model"][k] - start for k, start in model.initial.items()]
    return float(torch.sqrt(sum((d**2).sum() for d in moved)))


def test_grad_clip_bounds_the_update_and_without_it_the_update_is_larger():
    clip = 0.01
    clipped = one_sgd_step(f"train.grad_clip={clip}")
    # SGD moves the weights by lr * gradient; clipping scales the gradient's norm down to grad_clip.
    assert clipped == pytest.approx(10 * clip, rel=1e-3), "the update of a clipped step is lr * grad_clip"
    free = one_sgd_step()
    assert free > 10 * clipped, f"without train.grad_clip the same step moved {free:.3g}, not more than 10x"


def lr_per_epoch(store, *overrides: str) -> list[float]:
    """The `lr` metric a run tracked in `store` logged for each epoch (the rate that epoch trained with)."""
    Hyrax(overrides=[f"optimizer.lr={LR}", *store.overrides, *overrides]).train()
    [run] = store.runs()
    assert run.info.status == "FINISHED"
    return store.history(run.info.run_id, "lr")


def test_cosine_schedule_decays_the_logged_lr_from_lr_toward_eta_min(store):
    eta_min, epochs = 0.01, 6
    logged = lr_per_epoch(
        store, SMALL, "scheduler=cosine", f"scheduler.eta_min={eta_min}", f"train.epochs={epochs}"
    )
    # T_max is train.epochs by default: half a cosine period over the run.
    expected = [eta_min + (LR - eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[0] == pytest.approx(LR) and all(a > b for a, b in itertools.pairwise(logged))


def test_step_schedule_multiplies_the_logged_lr_by_gamma_every_step_size_epochs(store):
    logged = lr_per_epoch(
        store, SMALL, "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5", "train.epochs=5"
    )
    assert logged == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 4], rel=1e-6)


def test_without_a_scheduler_the_logged_lr_stays_put(store):
    assert lr_per_epoch(store, SMALL, "train.epochs=3") == pytest.approx([LR] * 3, rel=1e-9)


def test_plateau_schedule_halves_the_lr_after_patience_epochs_without_improvement(store, tmp_path):
    # Zero inputs and a linear model without bias: the output is always 0, so the validation loss
    # never improves after the first epoch, whatever the learning rate.
    np.savez(tmp_path / "zeros.npz", x=np.zeros((60, 3), "float32"), y=np.arange(60) % 2)
    logged = lr_per_epoch(
        store,
        "data_set=numpy",
        f"data_set.path={tmp_path}/zeros.npz",
        "model=linear",
        "model.bias=false",
        "scheduler=plateau",
        "train.epochs=8",
    )
    # patience 2: the 3rd epoch after the best is one too many; then the count starts again.
    assert logged == pytest.approx([LR] * 4 + [LR / 2] * 3 + [LR / 4], rel=1e-6)


def test_resuming_with_more_epochs_stretches_the_cosine_schedule(store):
    base = [f"optimizer.lr={LR}", *store.overrides, SMALL, "scheduler=cosine"]
    h = Hyrax(overrides=[*base, "train.epochs=2"])
    h.train()
    Hyrax(overrides=[*base, "train.epochs=6", f"train.resume={h.last_run_dir}"]).train()
    [run] = store.runs()  # the resumed run continues the same MLflow run
    logged = store.history(run.info.run_id, "lr")
    # Two epochs of the 2-epoch schedule, then the 6-epoch one from where it stands at epoch 2
    # (the checkpoint's T_max=2 would have kept the rate at eta_min).
    expected = [LR, LR / 2] + [LR * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(2, 6)]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_grad_clip_for_a_model_with_its_own_train_step_is_an_error_not_ignored():
    from hyrax import HyraxError

    h = Hyrax(
        overrides=[
            "model=userpkg.models.StepNet",
            "data_set=userpkg.data.ImageLabelData",
            "train.grad_clip=0.5",
            "train.epochs=1",
            "mlflow.enabled=false",
        ]
    )
    with pytest.raises(HyraxError, match="has its own train_step, so it would do nothing") as caught:
        h.train()
    assert caught.value.key == "train.grad_clip"
