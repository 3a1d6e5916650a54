"""`hyrax-run`: compose the config with Hydra and hand it to the API."""

from __future__ import annotations

import os
import sys
from typing import Any

from hyrax.config import PRIMARY_CONFIG, builtin_dir, register_configs


def _task(cfg: Any) -> Any:
    from hyrax.api import run

    return run(cfg)


def main() -> None:
    """Entry point of the `hyrax-run` console script."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        from hyrax.help import help_text

        try:
            print(help_text())
        except BrokenPipeError:  # `hyrax-run --help | head`
            sys.stderr.close()
        return
    import hydra

    from hyrax import report

    # As with `python -m`, packages in the working directory are importable (model=mypkg.MyModel).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    register_configs()
    # Hydra reports failures itself with exit code 1; ours tells bad input (exit 2) from crashes.
    import hydra._internal.utils as hydra_utils

    hydra_utils.run_and_report = report.run_and_report
    task = hydra.main(version_base="1.3", config_path=str(builtin_dir("conf")), config_name=PRIMARY_CONFIG)
    try:
        task(_task)()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted: the MLflow run is marked KILLED; checkpoints written so far are kept.\n")
        sys.exit(130)


if __name__ == "__main__":
    sys.exit(main())
