"""What every Ray Train worker runs for the train_imagegen stage: the mask -> image generator's
epochs under DDP, with the segmenter's checkpoints, recovery and logging (pipeline/worker.py).

Each epoch ends with a validation score: the judge segmenter (the train stage's model) reads the
images the generator's moving average draws from this worker's share of the validation masks,
and the confusion matrices of all workers are summed. Ray keeps the best checkpoints by it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
from mlflow.tracking import MlflowClient

from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.data.augment import pair_transform
from ganseg.data.datasets import PreparedSplit, shard_indices, to_input
from ganseg.export import load_model
from ganseg.imagegen.evaluation import grid_rows
from ganseg.imagegen.training import ImagegenState, build_state, sample, train_epoch
from ganseg.metrics import confusion_matrix, scores
from ganseg.viz import sample_grid
from pipeline.console import say
from pipeline.epoch_logging import images_due
from pipeline.worker import (
    EpochLogger,
    maybe_inject_fault,
    place,
    report_epoch,
    resume_from_checkpoint,
    shuffled_loader,
)

SCORE = "val_judge_miou"
GRID_DIR = "training/samples"
GRID_ROWS = 4
VAL_SEED = 0  # the same noise every epoch, so that epochs compare


def imagegen_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    params = Params.model_validate(config["params"])
    cfg = params.imagegen
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    data_dir = Path(config["data_dir"])
    stats = read_dataset_stats(data_dir)
    judge = load_model(config["judge_dir"])[0].to(device)

    state = build_state(cfg, stats.num_classes, stats.channels, place)
    train_set = PreparedSplit(data_dir, "train", pair_transform(cfg.augment, stats.image_size))
    train_loader = shuffled_loader(train_set, cfg.batch_size, world)
    val_set = PreparedSplit(data_dir, "val")
    val_masks = torch.from_numpy(val_set.masks[shard_indices(len(val_set), rank, world)]).long()

    epoch, history = resume_from_checkpoint(state)
    resumed, first_epoch, started = epoch > 0, epoch, time.monotonic()
    logger = EpochLogger(config, SCORE) if rank == 0 and config.get("run_id") else None
    if logger:
        logger.log_new(history)
    while epoch < cfg.epochs:
        epoch += 1
        maybe_inject_fault(params, epoch, rank, resumed)
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        epoch_started = time.perf_counter()
        means = train_epoch(state, train_loader, cfg)
        rate = torch.tensor([len(train_loader) * cfg.batch_size / (time.perf_counter() - epoch_started)])
        confusion = _judged(state, judge, val_masks, device)
        if world > 1:
            dist.all_reduce(confusion)
            dist.all_reduce(rate)
        metrics = {"epoch": epoch, **means, "images_per_s": rate.item(), SCORE: scores(confusion.cpu())["miou"]}
        history.append(metrics)
        if logger and images_due(epoch, params.mlflow.log_images_every, cfg.epochs):
            _log_grid(logger.client, logger.run_id, state, val_set, cfg.samples, epoch)
        report_epoch(metrics, state, epoch, history, is_chief=rank == 0)
        if logger:
            logger.log_new(history)
        if config.get("progress") and rank == 0:
            seconds_left = (time.monotonic() - started) / (epoch - first_epoch) * (cfg.epochs - epoch)
            say(f"image generator epoch {epoch}/{cfg.epochs}  loss_d {means['loss_d']:.3f}  loss_g {means['loss_g']:.3f}"
                f"  {SCORE} {metrics[SCORE]:.3f}  {metrics['images_per_s']:.0f} img/s  ~{seconds_left:.0f} s left")


def _judged(state: ImagegenState, judge: torch.nn.Module, masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The judge's confusion matrix on images drawn from `masks` (this worker's validation share)."""
    confusion = torch.zeros(state.num_classes, state.num_classes, dtype=torch.long, device=device)
    for start in range(0, len(masks), 32):
        batch = masks[start:start + 32]
        drawn = sample(state.eval_generator, batch, state.num_classes, seed=VAL_SEED + start)
        with torch.no_grad():
            pred = judge(to_input(drawn).to(device)).argmax(1)
        confusion += confusion_matrix(pred, batch.to(device), state.num_classes)
    return confusion


def _log_grid(client: MlflowClient, run_id: str, state: ImagegenState, val_set: PreparedSplit, samples: int,
              epoch: int) -> None:
    """mask | real | `samples` drawn images, for the same validation masks every epoch."""
    rows = grid_rows(val_set.masks, GRID_ROWS)
    masks = torch.from_numpy(val_set.masks[rows]).long()
    drawn = torch.stack([sample(state.eval_generator, masks, state.num_classes, seed=VAL_SEED + k)
                         for k in range(samples)], dim=1)
    grid = sample_grid(val_set.masks[rows], val_set.images[rows], drawn.numpy())
    client.log_image(run_id, grid, artifact_file=f"{GRID_DIR}/epoch_{epoch:04d}.png")
