"""A Hydra sweeper for tests/test_pool.py: runs the grid through the launcher and writes each job's
JobReturn (status, error) to `out`. With `threads` > 1 it calls `launch` from that many threads at
once, one job per call (as the Optuna sweeper does); on Ctrl-C it calls the launcher's `interrupt`.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper


class RecordingSweeper(Sweeper):
    def __init__(self, threads: int = 1, out: str = "returns.json", grace_s: float = 5.0) -> None:
        self.threads, self.out, self.grace_s = threads, out, grace_s

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments):
        parsed = OverridesParser.create().parse_overrides(arguments)
        [jobs] = BasicSweeper.split_arguments(parsed, None)
        record = {"parallel_jobs": getattr(self.launcher, "parallel_jobs", "missing"), "returns": []}
        if self.threads == 1:
            returns = list(self.launcher.launch(jobs, initial_job_idx=0))
        else:
            returns = self._threaded(jobs, record)
        for ret in returns:
            error = ret._return_value if ret.status.name == "FAILED" else None
            record["returns"].append(
                {"status": ret.status.name, "error": f"{type(error).__name__}: {error}" if error else None}
            )
        Path(self.out).write_text(json.dumps(record))
        return [returns]

    def _threaded(self, jobs, record):
        pool = ThreadPoolExecutor(self.threads)
        futures = [pool.submit(self.launcher.launch, [job], i) for i, job in enumerate(jobs)]
        try:
            while not all(f.done() for f in futures):
                wait(futures, timeout=0.2)
        except KeyboardInterrupt:
            started = time.time()
            self.launcher.interrupt(self.grace_s)
            wait(futures, timeout=30)
            record["interrupted_after_s"] = time.time() - started
            record["all_returned"] = all(f.done() for f in futures)
            Path(self.out).write_text(json.dumps(record))
            raise
        return [f.result()[0] for f in futures]
