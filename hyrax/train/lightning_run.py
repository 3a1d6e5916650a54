"""Lightning models run by Lightning's own Trainer, tracked and swept like any Hyrax run.

Lightning runs these (`wants_lightning`):

- `model=pkg.MyModule`, a `LightningModule` (of `pytorch_lightning` or `lightning.pytorch`), with
  `data_set=pkg.MyDataModule` (a `LightningDataModule`) or any Hyrax data set, which Hyrax splits and
  batches as for its own loop;
- `model=pkg.MyContainer`, a class that is no module itself but builds both: `create_model()` gives the
  LightningModule and `get_data_module()` the LightningDataModule (the container pattern of InnerEye);
  an optional `get_trainer_arguments()` adds Trainer arguments (keys given on the command line win).

Constructor parameters (the module's, the data module's, the container's) are `model.*` and
`data_set.*` keys. `train.*` settings become the Trainer's (`trainer_arguments`); the Trainer logs into
Hyrax's MLflow run and writes `checkpoints/best.ckpt` and `last.ckpt`, which `train.resume` continues from.
`train.devices=N` trains N ranks with Lightning's ddp strategy, in processes Hyrax starts
(`hyrax.train.lightning_ranks`): still one job, one MLflow run and one trial.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from hyrax.errors import HyraxError
from hyrax.train import ddp, debug, lightning_ranks, precision
from hyrax.train.lightning_parts import (
    as_lightning_data,
    hyrax_names,
    lightning_classes,
    lightning_package,
    make_callbacks,
    resume_point,
    scalars,
    sigint_kept,
)
from hyrax.train.lightning_ranks import train_rank  # noqa: F401  (run.py starts ranks with it)

log = logging.getLogger("hyrax")
CONTAINER_METHODS = ("create_model", "get_data_module")
# train.* keys and the Trainer arguments they set (a container's own arguments yield to given keys).
TRAINER_KEYS = {
    "train.epochs": "max_epochs",
    "train.precision": "precision",
    "train.devices": "devices",
    "train.device": "accelerator",
    "train.grad_clip": "gradient_clip_val",
    "train.accumulate_grad_batches": "accumulate_grad_batches",
    "train.log_every_n_steps": "log_every_n_steps",
}


def is_container(cls: type) -> bool:
    """Whether `cls` is a container: no torch module itself, with `create_model` and `get_data_module`."""
    return not issubclass(cls, torch.nn.Module) and all(
        callable(getattr(cls, name, None)) for name in CONTAINER_METHODS
    )


def wants_lightning(config: Mapping[str, Any]) -> bool:
    """Whether the configured model is a `LightningModule` or a container of one (decided from the
    class's ancestry, without importing Lightning)."""
    from hyrax.resolve import locate_target

    target = (config.get("model") or {}).get("_target_")
    if not target:
        return False
    model = locate_target("model", target)
    if lightning_package(model) is not None or is_container(model):
        return True
    target = (config.get("data_set") or {}).get("_target_")
    data_set = locate_target("data_set", target) if target else None
    if data_set is not None and lightning_package(data_set, "LightningDataModule") is not None:
        raise HyraxError(
            f"{data_set.__qualname__} is a LightningDataModule, which Lightning's Trainer reads, but "
            f"{model.__qualname__} is no LightningModule",
            key="data_set",
            fix="pair a LightningDataModule with a LightningModule, or use a Hyrax data set",
        )
    return False


def own_parts(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The config sections a Lightning model decides for itself (none for other models)."""
    return ("criterion", "optimizer", "scheduler") if wants_lightning(config) else ()


@dataclass
class Parts:
    """What one Lightning run trains: the module, and its data as a data module or as Hyrax's batches."""

    package: str  # pytorch_lightning | lightning.pytorch: where the Trainer comes from
    module: Any
    datamodule: Any = None
    data: Any = None  # hyrax.train.data.DataParts when a Hyrax data set feeds the module
    trainer_args: dict[str, Any] = field(default_factory=dict)
    world: int = 1  # ranks sharing Hyrax's batches (see `shard`)


def train(
    config: dict[str, Any],
    run_dir: Path,
    launch_dir: Path,
    tracker: Any,
    resumed: dict[str, Any] | None,
    on_epoch_end: Any,
    given: Sequence[str],
    watch: Any,
) -> Any:
    """Fit with Lightning's Trainer and return a `hyrax.train.run.TrainResult`. This process is rank 0:
    with `train.devices=N` it starts the other ranks (`train_rank`), and it alone tracks and writes."""
    from hyrax import tags
    from hyrax.train import record
    from hyrax.train.checkpoint import checkpoint_dir
    from hyrax.train.run import RUN_INFO, TrainResult, objective

    train_cfg = config["train"]
    check_settings(train_cfg)
    parts = build_parts(config, list(given))
    if train_cfg["grad_clip"] and not parts.module.automatic_optimization:
        raise HyraxError(
            f"train.grad_clip clips in Lightning's automatic optimization, and "
            f"{type(parts.module).__qualname__} optimizes manually (automatic_optimization = False), "
            "so it would do nothing",
            key="train.grad_clip",
            fix="clip in your training_step (self.clip_gradients), or remove train.grad_clip",
        )
    ckpt_path, monitor = resume_point(resumed)
    debug.mark(train_cfg, tracker)
    run_id = tracker.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_INFO).write_text(json.dumps({"mlflow_run_id": run_id}))
    record.log_start_files(tracker, config, run_dir, launch_dir)
    if parts.data is not None:
        record.log_data_set(tracker, config, parts.data)
    best = checkpoint_dir(run_dir) / "best.ckpt"
    with lightning_ranks.joined(config, run_dir, given) as team:
        tracker.set_tags({tags.RANKS: str(team.ranks.world)})
        watch.start(run_id)
        trainer, judge = fit(config, run_dir, parts, team, tracker, (monitor, ckpt_path), on_epoch_end, given)
        watch.state = SimpleNamespace(best_epoch=judge.best_epoch)
        debug.check_losses(train_cfg, judge.train_losses, trainer.current_epoch)
        with sigint_kept(judge):
            tested = final_test(trainer, parts, best)
    metrics = {**judge.best_metrics, **hyrax_names(tested)}
    value = objective(config, metrics)
    values = [value] if isinstance(value, float) else value
    named = (
        {"objective": values[0]} if len(values) == 1 else {f"objective_{i}": v for i, v in enumerate(values)}
    )
    tracker.log_metrics({**named, "best_epoch": judge.best_epoch + 1}, trainer.global_step)
    if config["mlflow"]["log_checkpoint"] and best.is_file():
        tracker.log_artifact(best, "checkpoints")
    if config["mlflow"]["log_model"] or config["mlflow"]["register_model"]:
        log.warning(
            "mlflow.log_model is not done for Lightning models: their checkpoints are in %s", best.parent
        )
    return TrainResult(value, parts.module, run_dir)


def fit(
    config: dict[str, Any],
    run_dir: Path,
    parts: Parts,
    team: lightning_ranks.Team,
    tracker: Any,
    resume: tuple[str | None, str | None],
    on_epoch_end: Any,
    given: Sequence[str],
) -> tuple[Any, Any]:
    """Build the Trainer (the same on every rank: the callbacks take part in collectives) and fit from
    `resume` (a checkpoint, the metric it monitored); returns the Trainer and the epoch callback."""
    from hyrax.train.checkpoint import checkpoint_dir

    train_cfg = config["train"]
    monitor, ckpt_path = resume
    L = lightning_classes(parts.package)
    lightning_ranks.shard(parts, team.ranks)
    checkpointers, watchers = make_callbacks(L, train_cfg, checkpoint_dir(run_dir), monitor)
    splits = [parts.data.batches["train"]] if parts.data is not None else []
    judge = L.EpochJudge(
        config,
        {"tracker": tracker, "mlflow_run_id": tracker.run_id, "config": config, "monitor": monitor},
        on_epoch_end,
        watchers,
        splits,
        will_test(L, parts),
    )
    callbacks = [judge, *(w for w in watchers if w not in checkpointers), *checkpointers]
    progress = train_cfg["progress"] if train_cfg["progress"] is not None else sys.stderr.isatty()
    args = trainer_arguments(train_cfg, run_dir, given, parts.trainer_args)
    args.update(lightning_ranks.strategy_arguments(parts.package, team, parts.data is not None))
    trainer = L.Trainer(
        **args,
        logger=L.TrackerLogger(tracker, str(run_dir)),
        callbacks=callbacks,
        enable_checkpointing=bool(checkpointers),
        enable_progress_bar=progress and team.ranks.main,
    )
    if team.ranks.main:
        many = f" on {team.ranks.world} ranks" if team.ranks.many else ""
        log.info(
            "training %s with Lightning's Trainer%s in %s",
            type(parts.module).__qualname__,
            many,
            run_dir.resolve(),
        )
        if ckpt_path:
            log.info("Lightning resumes from %s", ckpt_path)
    planned = args["max_epochs"] * (train_cfg["limit_batches"] or 0) or None
    with sigint_kept(judge), debug.step_profile(train_cfg, run_dir, tracker, planned) as step:
        judge.step_hook = step
        trainer.fit(parts.module, ckpt_path=ckpt_path, **fit_data(parts))
    return trainer, judge


def check_lightning(config: Mapping[str, Any]) -> None:
    """Before a run starts (`hyrax.early_checks`): a Lightning model's settings, and a data module paired
    with a model that is no LightningModule."""
    if wants_lightning(config):
        check_settings(config["train"])


def check_settings(train_cfg: Mapping[str, Any]) -> None:
    """Refuse settings Hyrax does not run a LightningModule with, naming the key."""
    count, device = train_cfg["devices"], str(train_cfg["device"])
    if count != 1:
        from hyrax.train.components import pick_device

        if ":" in device:
            raise HyraxError(
                f"train.device={device} names one device, and train.devices={count} asks for {count} ranks",
                key="train.device",
                fix="use train.device=cuda: each rank takes the GPU of its local rank",
            )
        ddp.check_devices(count, pick_device(device).type)
    if not precision.known(train_cfg["precision"]):
        raise HyraxError(
            f"train.precision '{train_cfg['precision']}' is not one Lightning's Trainer takes",
            key="train.precision",
            fix="use 32, bf16-mixed or 16-mixed",
        )


def build_parts(config: Mapping[str, Any], given: list[str]) -> Parts:
    """The module and its data, built from config; every component key the user gave must be used."""
    from hyrax.reads import ConfigView
    from hyrax.resolve import locate_target
    from hyrax.train.components import TRAINING_PARTS, check_all_used, model_class

    view = ConfigView(config)
    cls = model_class(config)
    if is_container(cls):
        parts = from_container(config, view, given)
    elif lightning_package(locate_target("data_set", config["data_set"]["_target_"]), "LightningDataModule"):
        parts = with_datamodule(config, cls, view)
    else:
        parts = with_hyrax_data(config, view)
    name = type(parts.module).__qualname__
    unused = [k for k in given if k.split(".")[0] in TRAINING_PARTS]
    if unused:
        raise HyraxError(
            f"'{unused[0]}' was set, but {name} is a LightningModule: its configure_optimizers and "
            "training_step choose the optimizer, scheduler and loss, so it would do nothing",
            key=unused[0],
            fix=f"make it a parameter of {name} (model.<parameter>), or remove {unused[0]}",
        )
    check_all_used(config, given, view.reads, set(TRAINING_PARTS))
    return parts


def from_container(config: Mapping[str, Any], view: Any, given: list[str]) -> Parts:
    """A container's module, data module and Trainer arguments (its constructor takes `model.*`)."""
    from hyrax.train.components import build_component

    container = build_component("model", config["model"], view)
    name = type(container).__qualname__
    ignored = [k for k in given if k.startswith("data_set.")]
    if ignored:
        raise HyraxError(
            f"'{ignored[0]}' was set, but the data comes from {name}.get_data_module(), so it would do "
            "nothing",
            key=ignored[0],
            fix=f"make it a parameter of {name} (model.<parameter>), or remove it",
        )
    module = container.create_model()
    package = lightning_package(type(module))
    if package is None:
        raise HyraxError(
            f"{name}.create_model() returned a {type(module).__qualname__}, not a LightningModule",
            key="model",
            fix="return a LightningModule from create_model()",
        )
    datamodule = container.get_data_module()
    if lightning_package(type(datamodule), "LightningDataModule") is None:
        raise HyraxError(
            f"{name}.get_data_module() returned a {type(datamodule).__qualname__}, not a LightningDataModule",
            key="model",
            fix="return a LightningDataModule from get_data_module()",
        )
    extra = getattr(container, "get_trainer_arguments", None)
    args = dict(extra()) if callable(extra) else {}
    lightning_ranks.check_container_arguments(args, name)
    log.info("%s built %s and %s", name, type(module).__qualname__, type(datamodule).__qualname__)
    return Parts(package, module, datamodule=datamodule, trainer_args=args)


def with_datamodule(config: Mapping[str, Any], cls: type, view: Any) -> Parts:
    """A LightningModule and the LightningDataModule `data_set` names; the module's `data_sample` (or
    `shape`), when its constructor asks, is the first item of the data module's train loader."""
    import inspect

    from hyrax.data_sets.items import strip_batch_axis
    from hyrax.models.contract import build_model, inputs_and_labels
    from hyrax.train.components import build_data_set, component_params

    datamodule = build_data_set(config, view)
    sample, shape = None, None
    if {"data_sample", "shape"} & set(inspect.signature(cls).parameters):
        datamodule.prepare_data()
        datamodule.setup("fit")
        sample = strip_batch_axis(next(iter(datamodule.train_dataloader())))
        x = inputs_and_labels(sample)[0]
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
    module = build_model(cls, component_params("model", config["model"]), view, sample, shape)
    return Parts(lightning_package(cls) or "pytorch_lightning", module, datamodule=datamodule)


def with_hyrax_data(config: Mapping[str, Any], view: Any) -> Parts:
    """A LightningModule on a Hyrax data set, split and batched by Hyrax, built as Hyrax builds models."""
    from hyrax.train.components import build_data_set, make_model, model_class
    from hyrax.train.data import prepare_data

    cls = model_class(config)
    data = prepare_data(config, build_data_set(config, view), cls, view.reads)
    module = make_model(config, data, torch.device("cpu"), view)
    return Parts(lightning_package(cls) or "pytorch_lightning", module, data=data)


def trainer_arguments(
    train_cfg: Mapping[str, Any], run_dir: Path, given: Sequence[str], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The Trainer's arguments from `train.*`, then a container's own (keys given on the command line win)."""
    device = str(train_cfg["device"])
    kind, _, index = device.partition(":")
    accelerator = {"cuda": "gpu"}.get(kind, kind)
    chosen = precision.normalise(train_cfg["precision"])  # Lightning's names, short ones spelled out
    args: dict[str, Any] = {
        "max_epochs": train_cfg["epochs"],
        "accelerator": accelerator,
        "devices": [int(index)] if index else train_cfg["devices"],
        "precision": "32-true" if chosen == "32" else chosen,
        "gradient_clip_val": train_cfg["grad_clip"],
        "accumulate_grad_batches": train_cfg["accumulate_grad_batches"],
        "log_every_n_steps": train_cfg["log_every_n_steps"],
        "default_root_dir": str(run_dir),
    }
    limit = train_cfg.get("limit_batches")
    if limit:
        args.update(limit_train_batches=limit, limit_val_batches=limit, limit_test_batches=limit)
    if train_cfg.get("overfit_batches"):
        args["overfit_batches"] = train_cfg["overfit_batches"]
    from_command_line = {TRAINER_KEYS[k] for k in given if k in TRAINER_KEYS}
    args.update({k: v for k, v in extra.items() if k not in from_command_line})
    return args


def fit_data(parts: Parts) -> dict[str, Any]:
    """`Trainer.fit`'s data arguments: the data module, or Hyrax's train and validate batches."""
    if parts.datamodule is not None:
        return {"datamodule": parts.datamodule}
    batches = parts.data.batches
    validate = None if batches["validate"].empty else as_lightning_data(batches["validate"], parts.world)
    return {
        "train_dataloaders": as_lightning_data(batches["train"], parts.world),
        "val_dataloaders": validate,
    }


def will_test(L: Any, parts: Parts) -> bool:
    """Whether the run ends with a test: the module has a test_step and there is test data."""
    if type(parts.module).test_step is L.LightningModule.test_step:
        return False
    if parts.data is not None:
        return not parts.data.batches["test"].empty
    return type(parts.datamodule).test_dataloader is not L.LightningDataModule.test_dataloader


def final_test(trainer: Any, parts: Parts, best: Path) -> dict[str, float]:
    """Test-split metrics of the best checkpoint (or the final weights when there is none); every rank
    tests what rank 0 found."""
    if not will_test(lightning_classes(parts.package), parts):
        return {}
    data = (
        {"datamodule": parts.datamodule}
        if parts.data is None
        else {"dataloaders": as_lightning_data(parts.data.batches["test"], parts.world)}
    )
    ckpt = trainer.strategy.broadcast(str(best) if best.is_file() else None, src=0)
    if trainer.is_global_zero:
        log.info("testing %s", f"the best checkpoint {best}" if ckpt else "the final weights")
    results = trainer.test(parts.module, ckpt_path=ckpt, verbose=False, **data)
    metrics = scalars(results[0]) if results else {}
    if metrics and trainer.is_global_zero:
        log.info("test  %s", "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics
