"""A plain Hydra app (no Hyrax training) whose jobs tell tests/test_pool.py what they saw.

Each job writes `seen.json` in its output dir: its pid, its devices, what state it found (registered
classes, os.environ, cwd, torch threads, logging, RNG draws), and when it started and ended. Then it
does `action`: check (nothing), leak (change all of that state, then seed the RNGs), import (import a
module that registers a class), sleep (`seconds`, after writing `started`), work (`iterations` matrix
products, for benchmarks/pool_overhead.py), raise, exit (os._exit(1)), sigkill (SIGKILL itself).
"""

import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig

from hyrax import registry

SEED = 7
LEAK_PATH = "/poolapp-leak"


class Marker(logging.NullHandler):
    """A handler a job adds to the 'poolapp' logger."""


def observe() -> dict:
    """What a job finds when it starts."""
    app_log = logging.getLogger("poolapp")
    return {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "env_leak": os.environ.get("POOLAPP_LEAK"),
        "models": registry.names("model"),
        "threads": torch.get_num_threads(),
        "app_logger": [type(h).__name__ for h in app_log.handlers] + [app_log.level],
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "sys_path_leak": LEAK_PATH in sys.path,
        "draws": [random.random(), float(np.random.rand()), float(torch.rand(1))],
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }


def leak() -> None:
    """Change every piece of process state a later job could see."""
    registry.register("model", type("LeakedModel", (), {}))
    import registering  # noqa: F401  (registers ImportedModel)

    os.environ["POOLAPP_LEAK"] = "1"
    os.chdir("/")
    torch.set_num_threads(torch.get_num_threads() + 1)
    logging.getLogger("poolapp").addHandler(Marker())
    logging.getLogger("poolapp").setLevel(logging.DEBUG)
    torch.use_deterministic_algorithms(True)
    sys.path.append(LEAK_PATH)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


def act(action: str, seconds: float, out: Path, iterations: int = 0) -> None:
    if action == "leak":
        leak()
    elif action == "import":
        import registering  # noqa: F401
    elif action == "sleep":
        (out / "started").touch()
        time.sleep(seconds)
    elif action == "work":  # CPU-bound, a fixed amount: training-like matrix products
        a = torch.randn(256, 256)
        for _ in range(iterations):
            a = torch.tanh(a @ a)
    elif action == "raise":
        raise ValueError("boom from the job")
    elif action == "exit":
        os._exit(1)
    elif action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> int:
    out = Path(HydraConfig.get().runtime.output_dir)
    seen = observe()
    seen["start"] = time.time()
    act(cfg.action, cfg.seconds, out, cfg.iterations)
    seen["end"] = time.time()
    seen["models_after"] = registry.names("model")
    (out / "seen.json").write_text(json.dumps(seen))
    return seen["pid"]


if __name__ == "__main__":
    main()
