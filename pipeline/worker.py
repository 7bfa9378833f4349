"""What every Ray Train worker runs (`train_loop_per_worker`) and its helpers, for the train, tune
and train_synthetic stages.

Each worker trains on its shard of the training tiles under DDP (in train_synthetic, part of every
batch generated), validates on its share of the validation tiles, and reports every epoch; rank 0 attaches the checkpoint and logs the epoch to
the MLflow run that the stage driver created.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, Subset

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.config import Params
from ganseg.contracts import DatasetStats, read_dataset_stats
from ganseg.data.datasets import PreparedSplit, labelled_frequency, shard_indices, training_batches
from ganseg.export import load_model
from ganseg.imagegen.export import load_image_generator
from ganseg.imagegen.training import ImagegenState, build_state
from ganseg.metrics import scores
from ganseg.parallel import ddp_options
from ganseg.segmenter.inference import confusion_over
from ganseg.segmenter.synthetic import GeneratedPairs
from ganseg.segmenter.training import TrainingState, build_training_state, train_epoch
from pipeline import tracking
from pipeline.console import epoch_line, say
from pipeline.epoch_logging import log_overlays_if_due

STATE_FILE = "state.pt"  # the checkpoint inside each Ray checkpoint folder
JOINT_FILE = "joint_image_generator.pt"  # train.synthetic.joint: the image generator trained alongside


def train_loop_per_worker(config: dict) -> None:
    """What every Ray Train worker runs: the epochs on its shard of the training tiles, validation on
    its share of the validation tiles, and one report per epoch (with the checkpoint, from rank 0)."""
    import ray.train
    import ray.train.torch

    params = Params.model_validate(config["params"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    data_dir = Path(config["data_dir"])
    stats = read_dataset_stats(data_dir)

    state = _build_state(params, stats, labelled_frequency(data_dir, params), device)
    train_loader, unlabelled_batches = training_batches(
        data_dir, params, stats.image_size, lambda dataset: shuffled_loader(dataset, params.train.batch_size, world)
    )
    val_set = PreparedSplit(data_dir, "val")
    val_loader = DataLoader(Subset(val_set, shard_indices(len(val_set), rank, world)),
                            batch_size=params.evaluate.batch_size)

    synthetic = generated_pairs(params, stats, config, device)
    joint = synthetic.joint if synthetic else None
    epoch, history = resume_from_checkpoint(state, joint)
    resumed, first_epoch, started = epoch > 0, epoch, time.monotonic()
    logger = EpochLogger(config) if rank == 0 and config.get("run_id") else None
    if logger:
        logger.log_new(history)  # epochs checkpointed before a crash but never logged
    while epoch < params.train.epochs:
        epoch += 1
        maybe_inject_fault(params, epoch, rank, resumed)
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        epoch_means = train_epoch(state, train_loader, params.train, device, epoch=epoch, unlabelled=unlabelled_batches,
                                  synthetic=synthetic)
        metrics = {"epoch": epoch} | _over_all_workers(epoch_means, state, val_loader, stats, device, world)
        history.append(metrics)
        if logger:  # an image may be logged again after a restart: it just replaces itself
            log_overlays_if_due(logger.client, logger.run_id, state, val_set, params, epoch)
        report_epoch(metrics, state, epoch, history, is_chief=rank == 0, joint=joint)
        if logger:
            logger.log_new(history)
        if config.get("progress") and rank == 0:
            seconds_left = (time.monotonic() - started) / (epoch - first_epoch) * (params.train.epochs - epoch)
            say(epoch_line(metrics, params.train.epochs, seconds_left))


def _over_all_workers(epoch_means: dict, state: TrainingState, val_loader, stats: DatasetStats,
                      device: torch.device, world: int) -> dict[str, float]:
    """The epoch's step means, images/s of all workers together, their mean share of time spent
    waiting for data, and the scores of the whole validation set (every worker validated a different
    shard: their confusion matrices are summed)."""
    confusion = confusion_over(state.eval_generator, val_loader, stats.num_classes, device)
    summed = torch.tensor([epoch_means.pop("images_per_s"), epoch_means.pop("waiting_for_data_share")], device=device)
    if world > 1:
        dist.all_reduce(confusion)
        dist.all_reduce(summed)
    images_per_s, wait_shares = summed.tolist()
    return ({**epoch_means, "images_per_s": images_per_s, "waiting_for_data_share": wait_shares / world}
            | _val_metrics(confusion, stats.class_names))


def shuffled_loader(dataset, batch_size: int, world: int) -> DataLoader:
    """Shuffled, and sharded across workers by Ray (with a DistributedSampler) when world > 1."""
    import ray.train.torch

    drop_last = len(dataset) >= batch_size * world
    return ray.train.torch.prepare_data_loader(DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last))


class EpochLogger:
    """Logs each epoch to the MLflow run exactly once, and only after its checkpoint is committed.

    A restarted worker group resumes from the last committed checkpoint, so an epoch logged any
    earlier could be trained and logged a second time.
    """

    def __init__(self, config: dict, every_epoch_metric: str = "val_miou"):
        self.client = MlflowClient(config["tracking_uri"])
        self.run_id = config["run_id"]
        logged = self.client.get_metric_history(self.run_id, every_epoch_metric)
        self.last_logged = max((m.step for m in logged), default=0)

    def log_new(self, history: list[dict]) -> None:
        import ray.train

        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        for metrics in history:
            if metrics["epoch"] > self.last_logged:
                tracking.log_metrics(self.client, self.run_id, metrics, step=metrics["epoch"])
                self.last_logged = metrics["epoch"]


def _build_state(
    params: Params, stats: DatasetStats, class_frequency: list[float], device: torch.device
) -> TrainingState:
    """The training state on this worker's device; class weights from `class_frequency` (the labelled tiles')."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    world = context.get_world_size()
    batch_norm_across_workers = params.model.norm == "batch" and world > 1
    sync_batch_norm = batch_norm_across_workers and device.type == "cuda"  # SyncBatchNorm cannot sync CPU tensors
    if batch_norm_across_workers and not sync_batch_norm and context.get_world_rank() == 0:
        say(f"warning: model.norm batch on {world} CPU workers: batch statistics stay per worker;"
            " use group or instance norm for results independent of the worker count")

    return build_training_state(params, stats.channels, stats.num_classes, class_frequency,
                                lambda network: place(network, sync_batch_norm))


def place(network: torch.nn.Module, sync_batch_norm: bool = False) -> torch.nn.Module:
    """`network` on this worker's device, and into DDP when there are several workers (with
    ganseg.parallel.ddp_options; batch norm synchronised across GPU workers with `sync_batch_norm`)."""
    import ray.train.torch

    if sync_batch_norm:
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return ray.train.torch.prepare_model(network, parallel_strategy_kwargs=ddp_options(network))


def generated_pairs(params: Params, stats: DatasetStats, config: dict, device: torch.device) -> GeneratedPairs | None:
    """train.synthetic's generated pairs in the train_synthetic stage (its config names the image
    generator and judge folders); None in the train and tune stages, or with share 0."""
    cfg = params.train.synthetic
    if cfg.share == 0 or "image_generator_dir" not in config:
        return None
    judge = load_model(config["judge_dir"])[0].to(device) if cfg.drop_disagreeing else None
    if cfg.joint:
        torch.manual_seed(params.seed)
        joint = build_state(params.imagegen, stats.num_classes, stats.channels, place)
        return GeneratedPairs(cfg, stats.num_classes, joint=joint, imagegen=params.imagegen, judge=judge)
    generator = load_image_generator(config["image_generator_dir"])[0].to(device)
    return GeneratedPairs(cfg, stats.num_classes, generator=generator, judge=judge)


def maybe_inject_fault(params: Params, epoch: int, rank: int, resumed: bool) -> None:
    """Kill this worker process as `at_epoch` starts, once: never in an attempt that resumed."""
    import ray.train

    fault = params.runtime.fault_injection
    if fault and not resumed and epoch == fault.at_epoch and rank == fault.kill_rank:
        # Die only once the previous epoch's checkpoint is committed, so recovery starts there.
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        say(f"fault injection: killing worker rank {rank} (pid {os.getpid()}) at the start of epoch {epoch}")
        os.kill(os.getpid(), signal.SIGKILL)


def _val_metrics(confusion: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    s = scores(confusion.cpu())
    per_class = {f"val_dice_{name}": value for name, value in zip(class_names, s["dice"])}
    return {"val_miou": s["miou"], "val_mdice": s["mdice"], "val_pixel_accuracy": s["pixel_accuracy"]} | per_class


def resume_from_checkpoint(state, joint: ImagegenState | None = None) -> tuple[int, list[dict]]:
    """(epoch, history) of the checkpoint Ray hands this attempt, restored into `state` (and the
    jointly trained image generator into `joint`); (0, []) on a first attempt."""
    import ray.train

    reported = ray.train.get_checkpoint()
    if reported is None:
        return 0, []
    with reported.as_directory() as folder:
        if joint is not None:
            restore_checkpoint(joint, Path(folder) / JOINT_FILE)
        checkpoint = restore_checkpoint(state, Path(folder) / STATE_FILE)  # last: its RNG state is the one that counts
    if ray.train.get_context().get_world_rank() == 0:
        say(f"resumed from the checkpoint of epoch {checkpoint['epoch']} (step {checkpoint['global_step']})")
    return checkpoint["epoch"], checkpoint["history"]


def report_epoch(metrics: dict, state, epoch: int, history: list, is_chief: bool,
                 joint: ImagegenState | None = None) -> None:
    """Every worker reports; only the chief attaches the checkpoint (the full training state, and
    that of a jointly trained image generator)."""
    import ray.train

    if not is_chief:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(checkpoint_of(state, epoch, history), Path(folder) / STATE_FILE)
        if joint is not None:
            torch.save(checkpoint_of(joint, epoch, []), Path(folder) / JOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def loop_config(params: Params, data_dir: Path, tracking_uri: str, run_id: str | None, progress: bool = False) -> dict:
    """What every worker gets; with `progress`, rank 0 prints a line per epoch for the console."""
    return {
        "params": params.model_dump(),
        "data_dir": str(data_dir.resolve()),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "progress": progress,
    }
