"""`hyrax-run`: compose the config with Hydra and hand it to the API."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyrax.config import PRIMARY_CONFIG, builtin_dir, register_configs
from hyrax.errors import HyraxError


def _task(cfg: Any) -> Any:
    from hyrax.api import run

    return run(cfg)


def _freeze_heap_at_exit() -> None:
    """Keep the interpreter's shutdown from scanning the whole heap again and again.

    While Python tears down its modules at exit it runs full garbage collections; with torch, MLflow,
    pandas and SQLAlchemy loaded that is ~400,000 objects each time, about 1.5-2 s of a `hyrax-run`
    after the run has ended (and its output been written). Frozen objects are left out of those
    collections; they are still freed as the modules go, only objects in reference cycles stay for
    the operating system to reclaim, as Python allows for objects alive at exit.
    """
    gc.freeze()


def main() -> None:
    """Entry point of the `hyrax-run` console script."""
    # Registered first, so it runs last: after every other exit handler (logging's flush, MLflow's).
    atexit.register(_freeze_heap_at_exit)
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        from hyrax.help import help_text

        try:
            print(help_text())
        except BrokenPipeError:  # `hyrax-run --help | head`
            sys.stderr.close()
        return
    import hydra

    from hyrax import report
    from hyrax.redact import install_log_redaction

    install_log_redaction()  # Hydra's launchers log each job's overrides, a tracking URI's password too

    # As with `python -m`, packages in the working directory are importable (model=mypkg.MyModel).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    from hyrax.run_notes import remember_command

    remember_command(sys.argv[1:])  # as typed: runs' descriptions show it, not its expansion
    try:
        sys.argv[1:] = hyrax_arguments(sys.argv[1:])
    except HyraxError as err:
        if report.full_error_requested():
            raise
        sys.stderr.write(err.render() + "\n")
        sys.exit(HyraxError.exit_code)
    register_configs()
    # Hydra reports failures itself with exit code 1; ours tells bad input (exit 2) from crashes.
    import hydra._internal.utils as hydra_utils

    hydra_utils.run_and_report = report.run_and_report
    task = hydra.main(version_base="1.3", config_path=str(builtin_dir("conf")), config_name=PRIMARY_CONFIG)
    try:
        task(_task)()
    except KeyboardInterrupt:
        sys.stderr.write(
            "Interrupted: the MLflow run is marked KILLED; checkpoints written so far are kept.\n"
        )
        sys.exit(130)


# Hydra's flags that take a value: the value is not an override even when it holds a '='.
_VALUE_FLAGS = {
    "-p",
    "--package",
    "--cfg",
    "-c",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--info",
    "--experimental-rerun",
}
_HYDRA_CFG_CHOICES = {"job", "hydra", "all"}


def hyrax_arguments(args: list[str]) -> list[str]:
    """The command line with Hyrax's spellings made Hydra's: `--config-file F` (or `-c F`, when F is not
    one of Hydra's `-c job|hydra|all`; without either, `./hyrax_config.toml` when it exists) becomes the
    overrides F stands for, ahead of the command line's own; `model.name=X` becomes `model=X`;
    `from_run=<run id>` becomes the overrides that compose that run's recorded config (`hyrax.rerun`),
    the others on top (then `./hyrax_config.toml` is not read: the record replaces it)."""
    from hyrax.compat.overrides import layered, name_choices, override_key
    from hyrax.compat.toml_file import USER_CONFIG_FILE, default_config_file, toml_overrides
    from hyrax.rerun import expand_from_run, has_from_run

    rest, config_file = _take_config_file(args)
    positions = [i for i in range(len(rest)) if _is_override(rest, i)]
    overrides = name_choices(rest[i] for i in positions)
    rerun = has_from_run(overrides)
    if config_file is None and default_config_file() is not None:
        if rerun:
            sys.stderr.write(f"hyrax-run: not reading ./{USER_CONFIG_FILE}: from_run uses the run's config\n")
        else:
            sys.stderr.write(f"hyrax-run: reading ./{USER_CONFIG_FILE} (Hyrax's config file)\n")
            config_file = USER_CONFIG_FILE
    from_file = toml_overrides(Path(config_file)) if config_file else []
    mine = {override_key(o) for o in overrides}
    at = positions[0] if positions else len(rest)
    flags_after = [a for i, a in enumerate(rest) if i >= at and i not in positions]
    merged = layered([o for o in from_file if override_key(o) not in mine], overrides)
    if rerun:
        with _log_to_stderr():
            merged = expand_from_run(merged, Path.cwd())
    return rest[:at] + merged + flags_after


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """Show Hyrax's log on stderr while the command line is read (Hydra sets up logging only later)."""
    logger = logging.getLogger("hyrax")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[hyrax-run][%(levelname)s] - %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _take_config_file(args: list[str]) -> tuple[list[str], str | None]:
    """The arguments without `--config-file F` / `-c F`, and F."""
    rest: list[str] = []
    found, i = None, 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--config-file="):
            found, i = arg.split("=", 1)[1], i + 1
        elif arg == "--config-file" or (
            arg == "-c" and i + 1 < len(args) and args[i + 1] not in _HYDRA_CFG_CHOICES
        ):
            if i + 1 >= len(args):
                raise HyraxError(
                    f"{arg} needs a file name",
                    key="--config-file",
                    fix="write --config-file hyrax_config.toml",
                )
            found, i = args[i + 1], i + 2
        else:
            rest.append(arg)
            i += 1
    return rest, found


def _is_override(args: list[str], i: int) -> bool:
    return "=" in args[i] and not args[i].startswith("-") and (i == 0 or args[i - 1] not in _VALUE_FLAGS)


if __name__ == "__main__":
    sys.exit(main())
