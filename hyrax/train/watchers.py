"""What watches a run besides its MLflow metrics: TensorBoard files, system metrics, and where to look."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyrax.tracker import Tracker

log = logging.getLogger("hyrax")


class Watchers:
    """What watches a run besides its MLflow metrics: TensorBoard event files (`train.tensorboard`) and
    MLflow's system metrics (`mlflow.system_metrics`); at the end, where to look at the run."""

    def __init__(self, config: Mapping[str, Any], tracker: Tracker, run_dir: Path, resumed: bool) -> None:
        self.config, self.tracker, self.run_dir, self.resumed = config, tracker, run_dir, resumed
        self.monitor: Any = None
        self.board: Any = None
        self.state: Any = None  # the loop's final state, once it has one
        self.experiment_id: str | None = None

    def start(self, run_id: str) -> None:
        """Open the TensorBoard writer and start sampling system metrics for the run."""
        if self.config["train"]["tensorboard"]:
            from hyrax.train.tensorboard import TensorBoard

            self.board = TensorBoard.open(self.run_dir)
            self.tracker.mirrors.append(self.board.log)
        if run_id and self.config["mlflow"]["system_metrics"]:
            from hyrax import system_metrics

            self.monitor = system_metrics.start(run_id, self.tracker.uri, resume=self.resumed)

    def stop(self) -> None:
        """Stop sampling and close the event files (safe when nothing started)."""
        if self.monitor is not None:
            self.monitor.stop()
        if self.board is not None:
            self.board.close()

    def say_where(self) -> None:
        """End the log with the run's page in the MLflow UI and how to open the UI."""
        from hyrax.ui_links import where_lines

        client = getattr(self.tracker, "client", None)
        if client is None or not self.tracker.run_id:
            return
        try:
            experiment_id = client.get_run(self.tracker.run_id).info.experiment_id
        except Exception:  # the store went away: the log has said so already
            return
        for line in where_lines(self.tracker.uri, experiment_id, self.tracker.run_id):
            log.info("%s", line)
