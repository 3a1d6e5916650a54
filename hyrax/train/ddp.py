"""Starting the other ranks of a data-parallel job on this machine (`train.devices=N`).

The job's own process is rank 0: it tracks the run, writes checkpoints and returns the objective to
the sweeper, so a DDP trial is one trial, one MLflow run and one Optuna result. Ranks 1..N-1 are
fresh Python processes (`python -m hyrax.train.ddp <spec>`) that build the same model and data from
the same config, train their shard and exit; they die with rank 0 (SIGKILL included).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyrax.errors import HyraxError
from hyrax.train import distributed
from hyrax.train.distributed import SINGLE, Ranks

log = logging.getLogger("hyrax")
ADDRESS = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on now (rank 0 listens on it for the others)."""
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return int(probe.getsockname()[1])


def check_devices(count: int, device_type: str) -> None:
    """On CUDA each rank needs a GPU of its own; CPU ranks share the cores."""
    if count < 1:
        raise HyraxError(
            f"train.devices={count}: a job needs at least one rank", key="train.devices", fix="use 1 or more"
        )
    if device_type == "cuda":
        import torch

        have = torch.cuda.device_count()
        if count > have:
            raise HyraxError(
                f"train.devices={count} ranks need {count} GPUs, and {have} are visible",
                key="train.devices",
                fix=f"use train.devices={have} or fewer, or make more GPUs visible (CUDA_VISIBLE_DEVICES)",
            )
    elif device_type not in ("cpu",):
        raise HyraxError(
            f"train.devices={count}: data-parallel training runs on CUDA GPUs or CPUs, not {device_type}",
            key="train.devices",
            fix="use train.devices=1, or train.device=cpu",
        )


class LocalRanks:
    """Ranks 1..N-1 of a job, started as processes on this machine."""

    def __init__(self, processes: list[subprocess.Popen[bytes]], spec: Path) -> None:
        self.processes, self.spec = processes, spec

    @classmethod
    def start(
        cls, config: dict[str, Any], run_dir: Path, given: Sequence[str], world: int, port: int
    ) -> LocalRanks:
        """Start ranks 1..world-1 for `config`, meeting rank 0 at ADDRESS:`port`."""
        handle, name = tempfile.mkstemp(prefix="hyrax-ranks-", suffix=".pkl")
        with os.fdopen(handle, "wb") as out:
            pickle.dump({"config": config, "run_dir": str(run_dir), "given": list(given)}, out)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "MASTER_ADDR": ADDRESS,
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world),
        }
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "hyrax.train.ddp", name],
                env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                preexec_fn=_die_with_parent,
            )
            for rank in range(1, world)
        ]
        log.info("started %d more ranks (pids %s) for data-parallel training", world - 1, _pids(processes))
        return cls(processes, Path(name))

    def failed(self, wait_s: float = 0.0) -> list[tuple[int, int]]:
        """The ranks that have exited with an error, as (rank, exit code), given up to `wait_s` to
        exit: a rank's error breaks rank 0's collective as soon as its connection closes, before its
        process has ended."""
        deadline = time.monotonic() + wait_s
        while True:
            codes = [(rank, p.poll()) for rank, p in enumerate(self.processes, start=1)]
            failed = [(rank, code) for rank, code in codes if code not in (None, 0)]
            if failed or all(code is not None for _, code in codes) or time.monotonic() >= deadline:
                return failed
            time.sleep(0.1)

    def stop(self, wait_s: float = 30.0) -> list[int]:
        """Wait for the ranks to finish (they end with rank 0's run), then make sure they are gone;
        returns their exit codes."""
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=wait_s))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        self.spec.unlink(missing_ok=True)
        return codes


@contextmanager
def started_ranks(
    config: dict[str, Any], run_dir: Path, given: Sequence[str]
) -> Iterator[tuple[Ranks, tuple[str, int]]]:
    """On the job's own process: its ranks and where rank 0 listens. That is the tasks of a Slurm step
    (started by Slurm), or `train.devices` ranks with ranks 1..N-1 started here, or just this one.

    Afterwards the process group is left and the started ranks are waited for (killed after 30 s, or
    5 s when rank 0 failed: a rank waiting in a collective for it never ends). A training error that
    a failed rank caused (its connection broke) is reported as that rank's failure."""
    count = config["train"]["devices"]
    slurm = distributed.slurm_ranks()
    local: LocalRanks | None = None
    if slurm is not None:
        if count > 1:
            raise HyraxError(
                f"train.devices={count} inside a Slurm step of {slurm.world} tasks: each task is a rank",
                key="train.devices",
                fix="use train.devices=1 with hydra.launcher.tasks_per_node=N (and nodes=M)",
            )
        ranks, rendezvous = slurm, distributed.slurm_rendezvous()
    elif count > 1:
        port = free_port()
        local = LocalRanks.start(config, run_dir, given, count, port)
        ranks, rendezvous = Ranks(0, count, 0), (ADDRESS, port)
    else:
        ranks, rendezvous = SINGLE, (ADDRESS, 0)
    wait_s = 30.0
    try:
        yield ranks, rendezvous
    except BaseException as err:
        wait_s = 5.0
        failed = local.failed(wait_s=5.0) if local is not None and isinstance(err, RuntimeError) else []
        if failed:
            rank, code = failed[0]
            raise RuntimeError(
                f"rank {rank} of this data-parallel job failed (exit code {code}); its error is in the "
                "log above"
            ) from err
        raise
    finally:
        distributed.stop()
        if local is not None:
            local.stop(wait_s)


def _pids(processes: list[subprocess.Popen[bytes]]) -> str:
    return ", ".join(str(p.pid) for p in processes)


def _die_with_parent() -> None:
    """In a started rank: get SIGKILL when rank 0 dies, however it dies (Linux), and take Ctrl-C
    from rank 0 only (a terminal's SIGINT reaches the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: Sequence[str] | None = None) -> int:
    """A started rank's process: train its shard of the job described by the spec file."""
    from hyrax.train.run import train_rank

    [spec_path] = list(argv if argv is not None else sys.argv[1:])
    spec = pickle.loads(Path(spec_path).read_bytes())
    rank = os.environ["RANK"]
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(message)s")
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    train_rank(
        spec["config"],
        Path(spec["run_dir"]),
        ranks,
        (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])),
        spec["given"],
    )
    return 0


if __name__ == "__main__":
    code = main()
    # Leave as multiprocessing's children do, without the interpreter's teardown: a started rank has
    # written nothing that needs it, and tearing down torch's threads once aborted a rank at exit
    # ("terminate called without an active exception").
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
