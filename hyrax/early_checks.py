"""Checks of the composed config that run before Hydra creates anything (a run directory, a sweep's
MLflow parent run, an Optuna study), as a Hydra callback listed first in `conf/config.yaml`.

Hydra turns an exception in a callback into a warning and carries on, so a failed check prints its one
message and exits with code 2 itself. With `HYDRA_FULL_ERROR=1` it lets the run go on instead, and the
same checks fail again inside the run with their full traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hyrax.errors import HyraxError


class EarlyChecks(Callback):
    """Hydra callback: the run's checks before a run; those and the sweep's before a multirun."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _gate(lambda: check_run(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hyrax.search.checks import check_sweep

        def checks() -> None:
            check_run(config)
            check_sweep(config.hydra.sweeper, list(config.hydra.overrides.task))

        _gate(checks)


def check_run(config: DictConfig) -> None:
    """The checks a run's settings pass before it starts: ranges, each component's values against its
    constructor's parameters, the settings a LightningModule is not run with, and the precision the
    device can do."""
    from hyrax.config import COMPONENT_GROUPS, plain
    from hyrax.ranges import check_ranges
    from hyrax.train.components import check_components
    from hyrax.train.lightning_run import check_lightning

    check_ranges(config)
    components = {g: plain(config[g]) for g in COMPONENT_GROUPS}
    check_components(components)
    check_lightning({**components, "train": plain(config.train)})
    check_precision(config)


def check_precision(config: DictConfig) -> None:
    """`train.precision` on the device the run will train on (16-mixed needs a GPU)."""
    from hyrax.train.components import pick_device
    from hyrax.train.precision import make_precision

    make_precision(config.train.precision, pick_device(str(config.train.device)))


def _gate(checks: Callable[[], None]) -> None:
    """Run `checks`; print a bad-input error's message and exit with code 2, or let Hydra warn."""
    from hyrax.report import as_user_error, full_error_requested

    try:
        checks()
    except Exception as err:
        user_error = as_user_error(err)
        if user_error is None or full_error_requested():
            raise  # Hydra warns; the run itself meets the problem again and reports it
        sys.stderr.write(user_error.render() + "\n")
        raise SystemExit(HyraxError.exit_code) from err
