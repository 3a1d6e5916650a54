"""`train.profile`: a torch.profiler trace of the first training steps (after one to settle in), as a
Chrome trace (chrome://tracing, https://ui.perfetto.dev) and a table of the ops that took longest."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import profiler as tp

log = logging.getLogger("hyrax")
TRACE_FILE = "trace.json"
TABLE_FILE = "top_ops.txt"
TOP_OPS = 30
# Skip one step (data loader start-up, first allocations), warm up one, record three.
WAIT, WARMUP, ACTIVE = 1, 1, 3


def schedule_for(planned: int | None) -> tuple[int, int, int]:
    """(wait, warmup, active) for a run of `planned` train steps (None: unknown): the full schedule
    when it fits, else the fewest steps skipped that still record some."""
    if planned is None or planned >= WAIT + WARMUP + ACTIVE:
        return WAIT, WARMUP, ACTIVE
    if planned >= 2:
        return 0, 1, planned - 1
    return 0, 0, 1


class StepProfiler:
    """torch.profiler over the train steps: `start`, `step` after each batch, `stop` gives its files."""

    def __init__(self, folder: Path, planned: int | None) -> None:
        self.folder = folder
        self.cuda = torch.cuda.is_available()
        activities = [tp.ProfilerActivity.CPU] + ([tp.ProfilerActivity.CUDA] if self.cuda else [])
        wait, warmup, active = schedule_for(planned)
        self.recorded = active
        with warnings.catch_warnings():  # "won't be using warmup": only for runs too short for one
            warnings.simplefilter("ignore", UserWarning)
            schedule = tp.schedule(wait=wait, warmup=warmup, active=active, repeat=1)
        self.profiler = tp.profile(
            activities=activities,
            schedule=schedule,
            on_trace_ready=self._write,
            record_shapes=True,
        )
        self.written: list[Path] = []

    def start(self) -> None:
        """Start the profiler (it records nothing until its schedule says so)."""
        self.profiler.start()
        log.info("profiling train steps into %s", self.folder)

    def step(self) -> None:
        """One train step has ended."""
        self.profiler.step()

    def stop(self) -> list[Path]:
        """Stop the profiler (a recording cut short is written too); the files written."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.profiler.stop()
        if not self.written:
            log.warning("train.profile: the run ended before a profiled train step, so there is no trace")
        return self.written

    def _write(self, profiler: tp.profile) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        trace, table = self.folder / _ranked(TRACE_FILE), self.folder / _ranked(TABLE_FILE)
        profiler.export_chrome_trace(str(trace))
        sort = "self_device_time_total" if self.cuda else "self_cpu_time_total"
        table.write_text(profiler.key_averages().table(sort_by=sort, row_limit=TOP_OPS) + "\n")
        self.written = [trace, table]
        log.info(
            "profile of %d train steps: %s (chrome://tracing or ui.perfetto.dev), %s",
            self.recorded,
            trace,
            table,
        )


def _ranked(name: str) -> str:
    """`trace.json` in a single process; `trace.rank1.json` for rank 1 of several, so ranks never write
    over each other's files."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        return name
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.rank{dist.get_rank()}.{suffix}"
