"""The reference task of `whole_process.py`, written by hand with torch and MLflow, as a careful user would.

An MLP 784-256-10 trained with Adam (lr 1e-3, cross entropy) on the arrays `x` (float32) and `y` (int64
class indices) of a `.npz` file: a seeded 80/10/10 split by index (no copies of the data), shuffled
batches gathered by indexing the whole tensors, validation after every epoch, the last checkpoint
saved each epoch, test metrics at the end. Params and per-epoch metrics go to MLflow.

    python benchmarks/reference_by_hand.py --data x.npz --tracking-uri sqlite:///mlflow.db --epochs 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch import nn


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and labels of the .npz file, as tensors sharing the loaded arrays' memory."""
    with np.load(path) as arrays:
        return torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])


def split(n: int, seed: int, fractions: tuple[float, float, float]) -> list[torch.Tensor]:
    """Disjoint train / validate / test index sets of a seeded permutation of `n` items."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    n_train = min(round(fractions[0] * n), n - n_val - n_test)
    return list(order[: n_train + n_val + n_test].split([n_train, n_val, n_test]))


@torch.no_grad()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, batch: int
) -> dict[str, float]:
    """Mean loss and accuracy over the items `idx`, in batches."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(idx), batch):
        rows = idx[start : start + batch]
        out = model(x[rows])
        loss += float(loss_fn(out, y[rows])) * len(rows)
        correct += int((out.argmax(dim=1) == y[rows]).sum())
    model.train()
    return {"loss": loss / len(idx), "accuracy": correct / len(idx)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x, y = load(args.data)
    train_idx, val_idx, test_idx = split(len(x), args.seed, (0.8, 0.1, 0.1))
    classes = int(y.max()) + 1
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(x[0].numel(), args.hidden), nn.ReLU(), nn.Linear(args.hidden, classes)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    args.out.mkdir(parents=True, exist_ok=True)

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("reference")
    with mlflow.start_run(run_name="by hand"):
        mlflow.log_params(
            {
                "hidden": args.hidden,
                "lr": args.lr,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "seed": args.seed,
                "data": str(args.data),
            }
        )
        step = 0
        for epoch in range(args.epochs):
            started, total = time.perf_counter(), 0.0
            order = train_idx[torch.randperm(len(train_idx))]
            for start in range(0, len(order), args.batch_size):
                rows = order[start : start + args.batch_size]
                loss = loss_fn(model(x[rows]), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss)
                step += 1
            seconds = time.perf_counter() - started
            val = evaluate(model, loss_fn, x, y, val_idx, args.batch_size)
            metrics = {
                "train/loss": total / -(-len(order) // args.batch_size),
                "samples_per_s": len(order) / seconds,
                "val/loss": val["loss"],
                "val/accuracy": val["accuracy"],
                "epoch": epoch + 1,
            }
            mlflow.log_metrics(metrics, step=step)
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1},
                args.out / "last.pt",
            )
            print(
                f"epoch {epoch + 1}/{args.epochs}  " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )
        test = evaluate(model, loss_fn, x, y, test_idx, args.batch_size)
        mlflow.log_metrics({f"test/{k}": v for k, v in test.items()}, step=step)
        print("test  " + "  ".join(f"test/{k}={v:.4g}" for k, v in test.items()))


if __name__ == "__main__":
    main()
