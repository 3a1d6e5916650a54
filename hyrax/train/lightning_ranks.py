"""Data-parallel Lightning runs (`train.devices=N`, or the tasks of a Slurm step): Hyrax starts the
ranks, Lightning's `ddp` strategy trains them.

Lightning's own `ddp` launcher would start the other ranks by running the command line again (more
hyrax-run jobs, more MLflow runs, and broken Hydra multiruns). Here the job's process is rank 0: it
starts ranks 1..N-1 as Hyrax's own loop does (`hyrax.train.ddp.LocalRanks`), and hands the Trainer a
cluster environment that says the processes were created externally, so Lightning joins them and
starts nothing. Rank 0 alone tracks to MLflow, writes files and talks to the sweeper; its pruning
decision reaches the other ranks by a broadcast at the end of every epoch.

Hyrax's batches (a Hyrax data set) are sharded as for Hyrax's loop, each global batch dealt among the
ranks; every rank must take the same number of steps, so an epoch's last global batch is left out when
it has fewer items than there are ranks (at most N-1 items per split and epoch; which ones changes with
the shuffle). A LightningDataModule's loaders get Lightning's DistributedSampler.

Each rank's epoch metrics are its own share's unless the module logs them with `sync_dist=True` (which
Lightning recommends, and warns about): rank 0's are what is tracked, judged and reported.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyrax.errors import HyraxError
from hyrax.train import ddp, distributed
from hyrax.train.distributed import SINGLE, Ranks

log = logging.getLogger("hyrax")
# The Trainer arguments that decide how many processes train: Hyrax's (train.devices, Slurm tasks).
PROCESS_ARGUMENTS = ("devices", "num_nodes", "strategy")


@dataclass(frozen=True)
class Team:
    """The ranks of one Lightning job: this process's place, where rank 0 listens, and the nodes."""

    ranks: Ranks = SINGLE
    address: str = ddp.ADDRESS
    port: int = 0
    nodes: int = 1
    node_rank: int = 0

    @property
    def per_node(self) -> int:
        """Ranks on each node: the Trainer's `devices`."""
        return self.ranks.world // self.nodes


def slurm_team(ranks: Ranks, rendezvous: tuple[str, int], environ: Mapping[str, str] | None = None) -> Team:
    """The team of a Slurm step's tasks (the same number on every node, as Lightning requires)."""
    env = os.environ if environ is None else environ
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
    if ranks.world % nodes:
        raise HyraxError(
            f"a Slurm step of {ranks.world} tasks on {nodes} nodes: Lightning needs as many tasks on "
            "every node",
            key="hydra.launcher.tasks_per_node",
            fix="run the same number of tasks on each node (tasks_per_node=N, nodes=M)",
        )
    return Team(ranks, *rendezvous, nodes=nodes, node_rank=int(env.get("SLURM_NODEID") or 0))


def other_rank_team(ranks: Ranks, rendezvous: tuple[str, int]) -> Team:
    """The team of a rank other than 0: a Slurm task, or a rank rank 0 started on this machine."""
    if distributed.slurm_ranks() is not None:
        return slurm_team(ranks, rendezvous)
    return Team(ranks, *rendezvous)


@contextmanager
def joined(config: dict[str, Any], run_dir: Path, given: Sequence[str]) -> Iterator[Team]:
    """On rank 0: the job's team (see `hyrax.train.ddp.started_ranks`); afterwards the environment
    Lightning changed is put back."""
    with ddp.started_ranks(config, run_dir, given) as (ranks, rendezvous):
        if not ranks.many:
            team = Team()
        elif distributed.slurm_ranks() is not None:
            team = slurm_team(ranks, rendezvous)
        else:
            team = Team(ranks, *rendezvous)
        saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
        try:
            yield team
        finally:
            for key, value in saved.items():  # Lightning sets these for the process group it starts
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def train_rank(
    config: dict[str, Any], run_dir: Path, ranks: Ranks, rendezvous: tuple[str, int], given: Sequence[str]
) -> None:
    """A rank other than 0 of a data-parallel Lightning job: the same module, data and Trainer, from the
    same checkpoint when resumed; it tracks nothing and writes no files (Lightning saves checkpoints on
    rank 0 only), and stops cleanly when rank 0 says so (a pruned trial)."""
    from hyrax.tracker import NullTracker
    from hyrax.train.checkpoint import checkpoint_dir
    from hyrax.train.lightning_run import build_parts, final_test, fit, resume_point
    from hyrax.train.loop import StoppedByMain
    from hyrax.train.run import resolve_resume

    team = other_rank_team(ranks, rendezvous)
    run_dir, resumed = resolve_resume(config, run_dir)
    parts = build_parts(config, list(given))
    ckpt_path, monitor = resume_point(resumed)
    try:
        trainer, _ = fit(config, run_dir, parts, team, NullTracker(), (monitor, ckpt_path), None, given)
        final_test(trainer, parts, checkpoint_dir(run_dir) / "best.ckpt")
    except StoppedByMain as stopped:
        log.warning("rank %d: %s", ranks.rank, stopped)
    finally:
        distributed.stop()


def shard(parts: Any, ranks: Ranks) -> None:
    """With several ranks, each reads its share of Hyrax's batches (a data module's loaders get
    Lightning's DistributedSampler instead)."""
    if parts.data is None or not ranks.many:
        return
    for batches in parts.data.batches.values():
        batches.shard(ranks.rank, ranks.world)
    parts.world = ranks.world


def strategy_arguments(package: str, team: Team, hyrax_data: bool) -> dict[str, Any]:
    """The Trainer arguments of a team of several ranks: Lightning's `ddp` strategy in processes Hyrax
    created (no launcher starts any), and no DistributedSampler for Hyrax's batches (sharded already)."""
    if not team.ranks.many:
        return {}
    args: dict[str, Any] = {
        "strategy": "ddp",
        "devices": team.per_node,
        "num_nodes": team.nodes,
        "plugins": [environment_class(package)(team)],
    }
    if hyrax_data:
        args["use_distributed_sampler"] = False
    return args


def check_container_arguments(extra: Mapping[str, Any], name: str) -> None:
    """A container's Trainer arguments must not choose how many processes train: Hyrax starts them."""
    for key in PROCESS_ARGUMENTS:
        if key in extra and str(extra[key]) not in ("1", "auto"):
            raise HyraxError(
                f"{name}.get_trainer_arguments() sets the Trainer's {key}={extra[key]!r}; Hyrax starts "
                "the processes of a data-parallel run (Lightning's own launcher would run the command "
                "line again)",
                key="train.devices",
                fix=f"remove {key} from get_trainer_arguments() and set train.devices=N (and train.device)",
            )


@functools.cache
def environment_class(package: str) -> type:
    """A Lightning cluster environment (of `package`) for a `Team`: processes created externally, and
    every rank, size and address fixed by Hyrax rather than read from environment variables."""
    base = importlib.import_module(f"{package}.plugins.environments").ClusterEnvironment

    class HyraxEnvironment(base):  # type: ignore[misc, valid-type]
        """The ranks Hyrax started (or Slurm did), as Lightning's DDP strategy asks about them."""

        def __init__(self, team: Team) -> None:
            super().__init__()
            self.team = team

        @property
        def creates_processes_externally(self) -> bool:
            return True

        @property
        def main_address(self) -> str:
            return self.team.address

        @property
        def main_port(self) -> int:
            return self.team.port

        @staticmethod
        def detect() -> bool:
            return False  # only ever given explicitly

        def world_size(self) -> int:
            return self.team.ranks.world

        def set_world_size(self, size: int) -> None:
            """Nothing: the size is Hyrax's."""

        def global_rank(self) -> int:
            return self.team.ranks.rank

        def set_global_rank(self, rank: int) -> None:
            """Nothing: the rank is Hyrax's."""

        def local_rank(self) -> int:
            return self.team.ranks.local_rank

        def node_rank(self) -> int:
            return self.team.node_rank

        def validate_settings(self, num_devices: int, num_nodes: int) -> None:
            if num_devices * num_nodes != self.team.ranks.world:
                raise HyraxError(
                    f"the Trainer has devices={num_devices} on {num_nodes} nodes, and the job has "
                    f"{self.team.ranks.world} ranks",
                    key="train.devices",
                    fix="let train.devices (or the Slurm step's tasks) alone set the ranks",
                )

    return HyraxEnvironment


def decided_by_main(
    trainer: Any, hook: Callable[[int, dict[str, float]], None] | None, epoch: int, metrics: dict[str, float]
) -> None:
    """At the end of an epoch of several ranks: rank 0 calls the sweep's hook (which may prune the
    trial) and every rank learns whether it ended the run; the other ranks then raise `StoppedByMain`
    at the same point, before any further collective."""
    from hyrax.train.loop import StoppedByMain

    error: BaseException | None = None
    if trainer.is_global_zero and hook is not None:
        try:
            hook(epoch, metrics)
        except BaseException as err:  # TrialPruned, or an error: the other ranks must stop too
            error = err
    decision = trainer.strategy.broadcast(None if error is None else type(error).__name__, src=0)
    if error is not None:
        raise error
    if decision is not None:
        why = "its trial was pruned" if decision == "TrialPruned" else f"it raised {decision}"
        raise StoppedByMain(f"rank 0 stopped the run after epoch {epoch + 1} ({why})")


def equal_steps(size: int, batch_size: int, world: int) -> int:
    """Batches every rank takes per epoch from a split of `size` items: the full global batches of
    `batch_size × world`, and the last one when it has an item for every rank."""
    full, rest = divmod(size, batch_size * world)
    return full + (1 if rest >= world else 0)


class RankBatches:
    """One rank's share of a split (`Batches.shard`), as many batches on every rank; an iterable data
    set's ranks agree at each step whether every rank still has a batch."""

    def __init__(self, batches: Any, world: int) -> None:
        self.batches = batches
        self.steps = None if batches.size is None else equal_steps(batches.size, batches.batch_size, world)

    def __iter__(self) -> Iterator[Any]:
        if self.steps is not None:
            return itertools.islice(iter(self.batches), self.steps)
        return _while_every_rank_has_one(iter(self.batches))


class SizedRankBatches(RankBatches):
    """`RankBatches` of a split whose size is known."""

    def __len__(self) -> int:
        return int(self.steps or 0)


def rank_batches(batches: Any, world: int) -> RankBatches:
    """A sharded split as Lightning data for one of `world` ranks."""
    return SizedRankBatches(batches, world) if batches.size is not None else RankBatches(batches, world)


def _while_every_rank_has_one(iterator: Iterator[Any]) -> Iterator[Any]:
    import torch.distributed as dist

    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    while True:
        batch = next(iterator, None)
        flag = torch.tensor([0 if batch is None else 1], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if not int(flag):
            return
        yield batch
