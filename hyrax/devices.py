"""Which GPUs a sweep may use, and handing them out so that no two running jobs share one.

Both local launchers use this: `hydra/launcher=pool` gives each worker a fixed set for its life
(`split_devices`), `hydra/launcher=local` lends each job a set while it runs (`DevicePool`).
A device is named as `CUDA_VISIBLE_DEVICES` names it: an index ("0") or a UUID ("GPU-...").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hyrax.errors import HyraxError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def declared_gpus(gpus: Sequence[int | str] | None, needed: int = 0) -> list[str]:
    """The GPUs a sweep may hand out: `gpus` when given, else the sweep process's own
    `CUDA_VISIBLE_DEVICES` when set, else every device torch sees (torch is only asked when
    `needed` > 0, so a CPU sweep never imports it)."""
    if gpus is not None:
        return [str(g).strip() for g in gpus]
    visible = os.environ.get(VISIBLE_ENV)
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    if needed <= 0:
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def split_devices(devices: Sequence[str], n_sets: int, per_set: int, key: str) -> list[tuple[str, ...]]:
    """`n_sets` disjoint sets of `per_set` devices each, in order; an error names `key` when the
    declared devices are too few."""
    needed = n_sets * per_set
    if needed > len(devices):
        raise HyraxError(
            f"{n_sets} x {per_set} GPUs are needed but only {len(devices)} are declared "
            f"({','.join(devices) or 'none'})",
            key=key,
            fix="declare the GPUs with hydra.launcher.gpus=[0,1,...] (or CUDA_VISIBLE_DEVICES), "
            "or ask for fewer workers or fewer GPUs per worker",
        )
    return [tuple(devices[i * per_set : (i + 1) * per_set]) for i in range(n_sets)]


class DevicePool:
    """Lends disjoint device sets to jobs that run at the same time (thread-safe).

    Example:
        >>> pool = DevicePool(["0", "1"])
        >>> with pool.lent(1) as devices:
        ...     devices
        ('0',)
    """

    def __init__(self, devices: Sequence[str]) -> None:
        self.devices = list(devices)
        self._free = list(devices)
        self._changed = threading.Condition()

    def acquire(self, count: int, timeout: float | None = None) -> tuple[str, ...]:
        """`count` devices no running job holds, waiting until that many are free."""
        if count > len(self.devices):
            raise HyraxError(
                f"a job asks for {count} GPUs but only {len(self.devices)} are declared "
                f"({','.join(self.devices) or 'none'})",
                key="hydra.launcher.gpus_per_node",
                fix=f"set hydra.launcher.gpus_per_node to at most {len(self.devices)}, or make more GPUs "
                "visible (CUDA_VISIBLE_DEVICES)",
            )
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._free) >= count, timeout):
                raise TimeoutError(f"no {count} free GPUs within {timeout} s")
            taken = tuple(self._free[:count])
            del self._free[:count]
            return taken

    def release(self, devices: Sequence[str]) -> None:
        """Give back what `acquire` lent."""
        with self._changed:
            self._free.extend(d for d in devices if d not in self._free)
            self._free.sort(key=self.devices.index)
            self._changed.notify_all()

    @contextmanager
    def lent(self, count: int) -> Iterator[tuple[str, ...]]:
        """`count` devices for the duration of the block."""
        taken = self.acquire(count)
        try:
            yield taken
        finally:
            self.release(taken)
