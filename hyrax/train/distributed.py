"""Data-parallel training across processes (`train.devices=N`, or Slurm tasks): who is which rank, the
process group, and the few collectives the one training loop needs.

Gradients are averaged when the optimizer steps (a step pre-hook), so a model's own `train_step`
that calls `self.optimizer.step()` trains data-parallel unchanged; each rank's gradient is weighted by
the samples it saw since the last step, so an epoch's last, uneven batch is averaged exactly.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger("hyrax")
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one data-parallel job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that tracks, writes files and talks to the sweeper."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        """Whether there is more than one rank."""
        return self.world > 1


SINGLE = Ranks()


def slurm_ranks(environ: dict[str, str] | None = None) -> Ranks | None:
    """The ranks of a Slurm job step that runs one task per rank (`srun`, or the Slurm launcher with
    `tasks_per_node`/`nodes` > 1); None outside such a step."""
    env = os.environ if environ is None else environ
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or 1)
    if tasks <= 1 or "SLURM_PROCID" not in env:
        return None
    return Ranks(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID") or 0))


def slurm_rendezvous(environ: dict[str, str] | None = None) -> tuple[str, int]:
    """The address and port rank 0 of a Slurm step listens on: the step's first node, and a port
    derived from the job id (so two jobs sharing a node do not collide)."""
    import subprocess

    env = os.environ if environ is None else environ
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    try:
        names = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        names = [nodes.split(",")[0]]
    return names[0], 20000 + int(env.get("SLURM_JOB_ID") or 0) % 20000


def start(ranks: Ranks, device: torch.device, address: str, port: int) -> None:
    """Join the process group (gloo on the CPU, nccl on CUDA); every rank calls this."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{address}:{port}",
        rank=ranks.rank,
        world_size=ranks.world,
        timeout=TIMEOUT,
    )


def stop() -> None:
    """Leave the process group (safe when none was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(model: nn.Module, buffers_only: bool = False) -> None:
    """Make every rank's weights (or only its buffers: batch-norm statistics) rank 0's."""
    import torch.distributed as dist

    tensors = list(model.buffers()) if buffers_only else [*model.parameters(), *model.buffers()]
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def gather(value: Any) -> list[Any]:
    """Every rank's `value` (any picklable object), in rank order."""
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def from_main(value: Any = None) -> Any:
    """Rank 0's `value`, on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def aligned(batches: Iterable[Any], per_rank: int | None, ranks: Ranks) -> Iterator[Any]:
    """This rank's batches, then `None` until every rank has had as many steps: ranks must step
    together. `per_rank` is the step count when the split's size is known; otherwise (an iterable
    data set) the ranks agree on each step whether any of them still has a batch."""
    if not ranks.many:
        yield from batches
        return
    iterator = iter(batches)
    if per_rank is not None:
        for _ in range(per_rank):
            yield next(iterator, None)
        return
    import torch.distributed as dist

    while True:
        batch = next(iterator, None)
        flag = torch.tensor([0 if batch is None else 1])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not int(flag):
            return
        yield batch


class GradientSync:
    """Averages gradients across ranks just before the optimizer steps, weighted by samples seen."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.samples = 0
        self.done = False
        optimizer.register_step_pre_hook(lambda *_: self.reduce())
        optimizer.register_step_post_hook(lambda *_: self.reset())

    def add(self, samples: int) -> None:
        """Count the samples a micro-batch contributed to this rank's gradient."""
        self.samples += samples

    def reduce(self) -> None:
        """Replace every rank's gradients by their sample-weighted average (once per step)."""
        import torch.distributed as dist

        if self.done or not self.params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.detach().reshape(-1).float() for g in grads])
        weight = torch.tensor([float(self.samples)], device=flat.device)
        packed = torch.cat([flat * weight, weight])
        dist.all_reduce(packed)
        mean = packed[:-1] / packed[-1].clamp(min=1.0)
        offset = 0
        for p in self.params:
            size = p.numel()
            p.grad = mean[offset : offset + size].view_as(p).to(p.dtype)
            offset += size
        self.done = True

    def reset(self) -> None:
        """Start counting towards the next step."""
        self.samples, self.done = 0, False
