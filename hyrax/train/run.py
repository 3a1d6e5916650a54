"""A training job from start to finish: tracking, parts, resume, the loop, the final test, the objective."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyrax import tags
from hyrax.models.contract import TEST_NAMES
from hyrax.tracker import NullTracker, Tracker
from hyrax.tracking import tracking_uri
from hyrax.train import checkpoint, ddp, debug, distributed, lightning_run, placement, record
from hyrax.train.components import assemble, pick_device, seed_everything
from hyrax.train.distributed import Ranks
from hyrax.train.evaluate import evaluate
from hyrax.train.loop import Loop, StoppedByMain
from hyrax.train.objective import objective
from hyrax.train.precision import make_precision
from hyrax.train.watchers import Watchers

log = logging.getLogger("hyrax")
RUN_INFO = "hyrax_run.json"


def make_tracker(config: Mapping[str, Any], launch_dir: Path) -> Tracker:
    """The MLflow tracker the config asks for (or one that does nothing)."""
    settings = config["mlflow"]
    if not settings["enabled"]:
        return NullTracker()
    return Tracker(
        tracking_uri(settings["tracking_uri"], launch_dir),
        settings["experiment"],
        launch_dir,
        outage_wait_s=settings["outage_wait_s"],
    )


def requeued_resume(resume: str) -> str:
    """`train.resume` for this process: a job Slurm requeued (preempted, timed out) resumes itself."""
    if resume == "none" and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        log.info(
            "Slurm requeued this job (restart %s): resuming from its last checkpoint",
            os.environ["SLURM_RESTART_COUNT"],
        )
        return "auto"
    return resume


def resolve_resume(config: Mapping[str, Any], run_dir: Path) -> tuple[Path, dict[str, Any] | None]:
    """The run directory to write to and the checkpoint state to continue from, if any."""
    source = checkpoint.resume_source(config["train"]["resume"], run_dir)
    if source is None:
        return run_dir, None
    state = checkpoint.load(source, key="train.resume")
    owner = checkpoint.run_dir_of(source)
    log.info("resuming from %s (after epoch %d)", source, state["loop"]["epoch"])
    return owner, state


@dataclass
class TrainResult:
    """What a training run gives back: the objective a sweeper optimises and the trained model."""

    objective: float | list[float]
    model: nn.Module
    run_dir: Path


def train(
    config: dict[str, Any],
    run_dir: Path,
    launch_dir: Path,
    on_epoch_end: Any = None,
    given: Sequence[str] = (),
) -> TrainResult:
    """Train the configured model; the MLflow run ends FINISHED, FAILED or KILLED.

    `given` lists the config keys the user set (see `hyrax.train.components.check_all_used`).
    """
    config["train"]["resume"] = requeued_resume(config["train"]["resume"])
    slurm = distributed.slurm_ranks()
    if slurm is not None and not slurm.main:  # one task of a Slurm step: rank 0 tracks and reports
        train_rank(config, run_dir, slurm, distributed.slurm_rendezvous(), given)
        return TrainResult(float("nan"), None, run_dir)  # type: ignore[arg-type]
    run_dir, resumed = resolve_resume(config, run_dir)
    tracker = make_tracker(config, launch_dir)
    tracker.unsent_dir = run_dir
    previous_run = (resumed or {}).get("mlflow_run_id") or _recorded_run_id(run_dir, config)
    overrides = record.given_overrides(config, given)
    tracker.start(
        record.run_name(config, overrides),
        record.experiment_params(config, lightning_run.own_parts(config)),
        record.run_tags(config, run_dir, launch_dir, overrides),
        previous_run,
    )
    status = "FAILED"
    watch = Watchers(config, tracker, run_dir, resumed=previous_run is not None)
    try:
        result = _train(config, run_dir, launch_dir, tracker, resumed, on_epoch_end, given, watch)
        tracker.set_tags(
            {tags.NOTE: record.final_note(config, run_dir, overrides, result.objective, watch.state)}
        )
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as err:
        if _pruned(err):
            status = "KILLED"
            tracker.set_tags({tags.TRIAL_STATE: "PRUNED"})
        else:
            tracker.set_tags({tags.ERROR: f"{type(err).__name__}: {err}"})
        raise
    finally:
        watch.stop()
        tracker.finish(status)
        watch.say_where()


def _pruned(err: BaseException) -> bool:
    """Whether `err` is Optuna's word that the sweep pruned this trial (optuna is loaded if a trial ran)."""
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(err, optuna.TrialPruned)


def _recorded_run_id(run_dir: Path, config: Mapping[str, Any]) -> str | None:
    """A run restarted in the same directory (Slurm requeue) continues its MLflow run."""
    info = run_dir / RUN_INFO
    if config["train"]["resume"] == "auto" and info.is_file():
        return json.loads(info.read_text()).get("mlflow_run_id")
    return None


def _train(
    config: dict[str, Any],
    run_dir: Path,
    launch_dir: Path,
    tracker: Tracker,
    resumed: dict[str, Any] | None,
    on_epoch_end: Any,
    given: Sequence[str],
    watch: Watchers,
) -> TrainResult:
    train_cfg = config["train"]
    seed_everything(train_cfg["seed"], train_cfg["deterministic"])
    if lightning_run.wants_lightning(config):
        return lightning_run.train(config, run_dir, launch_dir, tracker, resumed, on_epoch_end, given, watch)
    device = pick_device(train_cfg["device"])
    ddp.check_devices(train_cfg["devices"], device.type)
    with ddp.started_ranks(config, run_dir, given) as (ranks, rendezvous):
        if ranks.many:
            distributed.start(ranks, rank_device(device, ranks), *rendezvous)
        return _train_main(config, run_dir, launch_dir, tracker, resumed, on_epoch_end, given, watch, ranks)


def _train_main(
    config: dict[str, Any],
    run_dir: Path,
    launch_dir: Path,
    tracker: Tracker,
    resumed: dict[str, Any] | None,
    on_epoch_end: Any,
    given: Sequence[str],
    watch: Watchers,
    ranks: Ranks,
) -> TrainResult:
    train_cfg = config["train"]
    run_id = tracker.run_id
    progress = train_cfg["progress"] if train_cfg["progress"] is not None else sys.stderr.isatty()
    loop, data = _build_loop(config, run_dir, tracker, ranks, given, progress, on_epoch_end)
    model = loop.model
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_INFO).write_text(json.dumps({"mlflow_run_id": run_id}))
    record.log_start_files(tracker, config, run_dir, launch_dir)
    record.log_data_set(tracker, config, data)
    tracker.set_tags({tags.RANKS: str(ranks.world)})
    watch.start(run_id)
    log.info("training %s in %s", type(model).__qualname__, run_dir.resolve())
    if resumed is not None:
        loop.restore(resumed)
    with debug.profiling(train_cfg, run_dir, tracker, data.batches):
        state = watch.state = loop.fit()
    debug.check_overfit(train_cfg, state, tracker)
    metrics = dict(state.best_metrics) or {}
    metrics.update(_final_test(loop, data.batches["test"], run_dir))
    value = objective(config, metrics)
    values = [value] if isinstance(value, float) else value
    named = (
        {"objective": values[0]} if len(values) == 1 else {f"objective_{i}": v for i, v in enumerate(values)}
    )
    finals = {k: v for k, v in metrics.items() if k.startswith("test/")}
    tracker.log_metrics({**finals, **named, "best_epoch": state.best_epoch + 1}, state.step)
    _log_artifacts(config, run_dir, tracker)
    if config["mlflow"]["log_model"] or config["mlflow"]["register_model"]:
        _log_model(config, loop, data.sample_batch, tracker)
    return TrainResult(value, model, run_dir)


def _build_loop(
    config: dict[str, Any],
    run_dir: Path,
    tracker: Tracker,
    ranks: Ranks,
    given: Sequence[str],
    progress: bool,
    on_epoch_end: Any,
) -> tuple[Loop, Any]:
    """The model, its data (this rank's shard, where `train.data_on_device` puts it) and the loop."""
    train_cfg = config["train"]
    device = rank_device(pick_device(train_cfg["device"]), ranks)
    precision = make_precision(train_cfg["precision"], device)
    data, model = assemble(config, device, given)
    data.batches = debug.wrap(train_cfg, data.batches, tracker)
    for batches in data.batches.values():
        batches.shard(ranks.rank, ranks.world)
    placement.place(data.batches, device, train_cfg["data_on_device"])
    if train_cfg["compile"]:
        model = torch.compile(model)  # type: ignore[assignment]
    loop = Loop(
        model=model,
        batches=data.batches,
        device=device,
        train_cfg=train_cfg,
        run_dir=run_dir,
        tracker=tracker,
        extra_state={"config": config, "mlflow_run_id": tracker.run_id},
        progress=progress and ranks.main,
        on_epoch_end=on_epoch_end if ranks.main else None,
        precision=precision,
        ranks=ranks,
    )
    return loop, data


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """A rank's device: its own GPU (by local rank) on CUDA, else `device`."""
    if device.type == "cuda" and ranks.many:
        return torch.device("cuda", ranks.local_rank)
    return device


def train_rank(
    config: dict[str, Any],
    run_dir: Path,
    ranks: Ranks,
    rendezvous: tuple[str, int],
    given: Sequence[str] = (),
) -> None:
    """A rank other than 0: the same model and data, its own shard, the same steps; no tracking and no
    files. It stops when rank 0 says so (a pruned trial)."""
    train_cfg = config["train"]
    seed_everything(train_cfg["seed"], train_cfg["deterministic"])
    if lightning_run.wants_lightning(config):  # Lightning's strategy joins the ranks itself
        lightning_run.train_rank(config, run_dir, ranks, rendezvous, given)
        return
    run_dir, resumed = resolve_resume(config, run_dir)
    distributed.start(ranks, rank_device(pick_device(train_cfg["device"]), ranks), *rendezvous)
    try:
        loop, data = _build_loop(config, run_dir, NullTracker(), ranks, given, False, None)
        if resumed is not None:
            loop.restore(resumed)
        loop.fit()
        _final_test(loop, data.batches["test"], run_dir)
    except StoppedByMain as stopped:
        log.warning("rank %d: %s", ranks.rank, stopped)
    finally:
        distributed.stop()


def _final_test(loop: Loop, batches: Any, run_dir: Path) -> dict[str, float]:
    """Test-split metrics of the best checkpoint (or the final weights when there is none)."""
    if batches.empty:
        return {}
    best = checkpoint.checkpoint_dir(run_dir) / checkpoint.BEST
    if best.is_file():
        loop.model.load_state_dict(checkpoint.load(best)["model"])
        log.info("testing the best checkpoint %s", best)
    measured = evaluate(
        loop.model, batches, loop.device, TEST_NAMES, ranks=loop.ranks, autocast=loop._autocast
    )
    metrics = {f"test/{k}": v for k, v in measured.items()}
    if metrics and loop.ranks.main:
        log.info("test  %s", "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def _log_model(config: Mapping[str, Any], loop: Loop, sample_batch: Any, tracker: Tracker) -> None:
    """The best checkpoint as an MLflow PyTorch model (and a registered version, when asked)."""
    if not config["mlflow"]["enabled"]:
        log.warning("mlflow.log_model needs MLflow tracking (mlflow.enabled=false): no model logged")
        return
    from hyrax.train.model_log import log_model

    best = checkpoint.checkpoint_dir(loop.run_dir) / checkpoint.BEST
    if best.is_file():
        loop.model.load_state_dict(checkpoint.load(best)["model"])
    tracker.wait()
    try:
        uri = log_model(
            tracker.client, tracker.run_id, loop.model, sample_batch, config["mlflow"]["register_model"]
        )
    except Exception as err:  # training succeeded and the checkpoint is kept: say so, do not fail the run
        log.warning("could not log the model to MLflow (the checkpoint %s is kept): %s", best, err)
        return
    log.info("logged the model as %s", uri)


def _log_artifacts(config: Mapping[str, Any], run_dir: Path, tracker: Tracker) -> None:
    best = checkpoint.checkpoint_dir(run_dir) / checkpoint.BEST
    if config["mlflow"]["log_checkpoint"] and best.is_file():
        tracker.log_artifact(best, "checkpoints")
