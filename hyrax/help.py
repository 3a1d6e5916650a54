"""`hyrax-run --help`: usage, the options of every config group and the train settings, printed fast.

Hydra's own help lists every Hydra config group by composing them all, which takes about a second;
this page is read straight from the config folders and the schema instead.
"""

from __future__ import annotations

import dataclasses
import itertools
import textwrap

from hyrax.config import (
    COMPONENT_GROUPS,
    DataLoaderConfig,
    GeneralConfig,
    TrainConfig,
    config_dirs,
    config_names,
    sweep_names,
)

USAGE = """\
hyrax-run: train PyTorch models composed from config, tracked in MLflow, swept with Optuna.

Usage:
  hyrax-run [key=value ...]                   one run (verb=train by default)
  hyrax-run -m key=a,b [key=c,d ...]          a grid sweep, one job per combination
  hyrax-run -m sweep=lr_search                an Optuna search from a preset in sweeps/
  hyrax-run verb=test|infer|export ckpt_path=RUN  test, predict, or export to ONNX (RUN: a run
                                              directory, a .pt file or an MLflow run id)
  hyrax-run from_run=RUN_ID [key=value ...]   re-run a recorded run's exact config (forked by the
                                              overrides given)
  hyrax-run verb=prepare                      describe the data set and its splits
  hyrax-run train.devices=N                   data-parallel on N ranks here (gloo on CPUs, a GPU each);
                                              on Slurm: hydra.launcher.tasks_per_node=N
  hyrax-run train.precision=bf16-mixed        autocast (16-mixed: fp16 + gradient scaling, GPUs only);
                                              train.accumulate_grad_batches=K steps every K batches
  hyrax-run --config-file hyrax_config.toml   a Hyrax config file (also -c FILE; ./hyrax_config.toml is
                                              read when present), the command line winning over it

A group option may be a config name (model=mlp), a dotted class path (model=mypkg.MyModel,
optimizer=torch.optim.RAdam) or a registered class name; its constructor parameters become keys
(model.hidden=128). Hyrax's spelling model.name=mypkg.MyModel chooses a class too.
`hyrax-run --cfg job` prints the whole composed config, `--hydra-help` Hydra's flags.
"""


def _fields(cls: type, prefix: str) -> list[str]:
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            lines += _fields(type(default), f"{prefix}{f.name}.")
        else:
            lines.append(f"  {prefix}{f.name}={default}")
    return lines


def _debug_presets() -> list[str]:
    """Each `debug=` preset with its description: the first paragraph of its file's header comment
    (after `# @package`), the user's conf/debug/ winning as in Hydra's search path."""
    lines = []
    for name in config_names("debug"):
        path = next(p for d in config_dirs("conf") if (p := d / "debug" / f"{name}.yaml").is_file())
        header = [ln.lstrip("#").strip() for ln in path.read_text().splitlines() if ln.startswith("#")]
        paragraph = " ".join(itertools.takewhile(bool, (h for h in header if "@package" not in h)))
        about = paragraph.removeprefix(f"debug={name}:").strip()
        lines += textwrap.wrap(
            f"debug={name}: {about}", width=100, initial_indent="  ", subsequent_indent="    "
        )
    return lines


def help_text() -> str:
    """The text `hyrax-run --help` prints."""
    groups = "\n".join(f"  {g}: {', '.join(config_names(g))}" for g in COMPONENT_GROUPS)
    return (
        f"{USAGE}\nConfig groups (group=option):\n{groups}\n  sweep: {', '.join(sweep_names()) or '-'}\n"
        f"  debug: {', '.join(config_names('debug')) or '-'}\n\n"
        f"Train settings (defaults):\n"
        + "\n".join(_fields(TrainConfig, "train."))
        + "\n\nDebugging presets (train.limit_batches, overfit_batches and profile work alone too;\n"
        "  a debug run is tagged hyrax.debug in MLflow):\n"
        + "\n".join(_debug_presets())
        + "\n\nHyrax's sections (defaults):\n"
        + "\n".join(_fields(GeneralConfig, "general.") + _fields(DataLoaderConfig, "data_loader."))
        + "\n\nTracking: mlflow.tracking_uri, mlflow.experiment, mlflow.enabled, mlflow.outage_wait_s.\n"
        "  The store is mlflow.tracking_uri when set (command line or config file), else\n"
        "  $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db (in the launch directory).\n"
    )
