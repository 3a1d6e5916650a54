"""The config schema (dataclasses in Hydra's ConfigStore) and where Hyrax finds its config files.

Groups `model`, `data_set`, `criterion`, `optimizer` and `scheduler` hold a `_target_` class and its
constructor arguments, so they are open mappings; `train`, `mlflow` and the rest are typed and closed,
so a wrong type or an unknown key fails when Hydra composes the config.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIMARY_CONFIG = "config"
COMPONENT_GROUPS = ("model", "data_set", "criterion", "optimizer", "scheduler")


@dataclass
class SplitConfig:
    """Fractions of the data set used for each split (they need not sum to 1)."""

    train: float = 0.8
    validate: float = 0.1
    test: float = 0.1


@dataclass
class EarlyStoppingConfig:
    """Stop when `monitor` has not improved for `patience` epochs; patience null turns it off."""

    monitor: str = "val/loss"
    mode: str = "min"
    patience: int | None = None
    min_delta: float = 0.0


@dataclass
class CheckpointConfig:
    """Which checkpoints a run writes into `<run dir>/checkpoints/`."""

    save_last: bool = True
    save_best: bool = True
    every_n_epochs: int = 1


@dataclass
class ObjectiveConfig:
    """The metric(s) a run returns to a sweeper, and whether lower or higher is better."""

    metric: Any = "val/loss"
    direction: Any = "minimize"


@dataclass
class TrainConfig:
    """How the training loop runs."""

    epochs: int = 10
    batch_size: int = 64
    device: str = "auto"
    seed: int = 42
    deterministic: bool = False
    num_workers: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    grad_clip: float | None = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: Any = "none"  # none | auto | a run dir, .pt file or MLflow run id; Hyrax's false means none
    log_every_n_steps: int = 50
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    progress: bool | None = None
    compile: bool = False
    tensorboard: bool = True  # write every metric as TensorBoard event files in <run dir>/tensorboard/
    data_sample: str = "item"  # what models get as data_sample: one item (item) or a batch of one (batch)
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed (autocast; fp16 gets a gradient scaler on CUDA)
    accumulate_grad_batches: int = 1  # optimizer step every N batches (the default step; models may read it)
    data_on_device: str = "auto"  # auto | true | false: move an in-memory data set to the device once
    devices: int = 1  # DDP ranks this job starts on this machine (one GPU each on CUDA, gloo on CPU)
    # Debugging (the debug=fast|overfit|profile presets set these):
    limit_batches: int | None = None  # at most this many batches of every split per epoch
    overfit_batches: int = 0  # train on the first N train batches again and again; fail if the loss stays up
    profile: bool = False  # a torch.profiler trace of the first steps, logged as an artifact


@dataclass
class GeneralConfig:
    """Hyrax's `[general]` table: where data and results live, and how much the log says."""

    data_dir: str = "./data"  # what a data set's `data_location` parameter gets unless data_set sets one
    results_dir: str = "runs"  # where single runs' directories go (sweeps: hydra.sweep.dir)
    log_level: str = "info"
    dev_mode: bool = False  # accepted from Hyrax configs; has no effect here


@dataclass
class DataLoaderConfig:
    """Hyrax's `[data_loader]` table: values set here win over their `train.*` twins."""

    batch_size: int | None = None  # train.batch_size when null
    num_workers: int | None = None  # train.num_workers when null
    shuffle: bool = True  # shuffle the train split each epoch
    collate_fn: str | None = None  # a dotted path to a function collating a list of items


@dataclass
class MlflowConfig:
    """Where and how runs are tracked.

    `tracking_uri`: set here or on the command line it wins over the MLFLOW_TRACKING_URI environment
    variable, which wins over the default `sqlite:///<launch dir>/mlflow.db`.
    """

    enabled: bool = True
    tracking_uri: str | None = None
    # How long the end of a run keeps retrying an unreachable tracking server before it writes what
    # is left to <run dir>/mlflow_unsent.jsonl.
    outage_wait_s: float = 30.0
    experiment: str = "hyrax"
    run_name: str | None = None
    log_checkpoint: bool = False
    # Log the best checkpoint as an MLflow PyTorch model (loadable with mlflow.pytorch.load_model);
    # `register_model=NAME` also registers it, a new version of NAME per run (and implies log_model).
    log_model: bool = False
    register_model: str | None = None
    system_metrics: bool = True  # CPU, memory (and GPU when present) at MLflow's sampling interval
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None


@dataclass
class ExportConfig:
    """`verb=export`: write a checkpoint's model in a portable format and check it against torch."""

    format: str = "onnx"
    path: str | None = None  # default: model.onnx in the checkpoint's run directory
    opset: int | None = None  # the exporter's default when null
    tolerance: float = 1e-4  # largest allowed difference between onnxruntime's and torch's outputs


@dataclass
class HyraxConfig:
    """The whole run configuration."""

    verb: str = "train"
    ckpt_path: str | None = None  # test/infer/export: a run directory, a .pt file or an MLflow run id
    # Re-run or fork a recorded run: its exact config, then the command line's overrides on top.
    from_run: str | None = None  # an MLflow run id
    from_run_allow_drift: bool = False  # run even when the code's git commit differs from the run's
    model: Any = None
    data_set: Any = None
    criterion: Any = None
    optimizer: Any = None
    scheduler: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    general: GeneralConfig = field(default_factory=GeneralConfig)
    data_loader: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore and register Hyrax's resolvers (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="hyrax_schema", node=HyraxConfig)
    if not OmegaConf.has_resolver("hyrax.uid"):
        OmegaConf.register_new_resolver("hyrax.uid", unique_suffix, use_cache=True)


def plain(value: Any) -> Any:
    """A DictConfig/ListConfig as plain dicts and lists (resolved), anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def unique_suffix() -> str:
    """A short random suffix so that two runs started in the same second never share a directory."""
    return f"{os.getpid() % 100000:05d}{secrets.token_hex(2)}"


def builtin_dir(name: str) -> Path:
    """The shipped `conf` or `sweeps` folder: inside the package when installed, else at the repo root."""
    package_dir = Path(__file__).resolve().parent
    installed = package_dir / name
    return installed if installed.is_dir() else package_dir.parent / name


def user_dir(name: str) -> Path | None:
    """The user's own `conf` or `sweeps` folder in the working directory, when there is one."""
    candidate = Path.cwd() / name
    return candidate if candidate.is_dir() else None


def config_dirs(name: str) -> list[Path]:
    """The `conf` or `sweeps` folders Hyrax reads, the user's (which wins) first."""
    return [d for d in (user_dir(name), builtin_dir(name)) if d is not None]


def config_names(group: str) -> list[str]:
    """The config files a component group offers (`model` -> mlp, cnn, ...), shipped and the user's."""
    return sorted({p.stem for d in config_dirs("conf") for p in (d / group).glob("*.yaml")})


def sweep_names() -> list[str]:
    """The sweep presets on offer, shipped and the user's."""
    return sorted({p.stem for d in config_dirs("sweeps") for p in d.glob("*.yaml")})
