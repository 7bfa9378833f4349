"""The image generator's training job (the train_imagegen stage): the mask -> image GAN on this
worker's shard of the training tiles. Each epoch ends with a validation score: the judge segmenter
(the train stage's model) reads the images the generator's moving average draws from this
worker's share of the validation masks, and the confusion matrices of all workers are summed."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ganseg.checkpoints import weights_to_export
from ganseg.config import Params
from ganseg.contracts import (
    IMAGEGEN_CARD,
    ImagegenCard,
    read_dataset_stats,
    write_imagegen_card,
)
from ganseg.data.datasets import PreparedSplit, shard_indices
from ganseg.fileio import png_bytes
from ganseg.imagegen.evaluation import grid_rows
from ganseg.imagegen.export import (
    export_image_generator,
    load_image_generator,
)
from ganseg.imagegen.generate import example_mask
from ganseg.imagegen.quality import judge_confusion
from ganseg.imagegen.training import ImagegenState, build_state, sample, train_epoch
from ganseg.jobs.base import STATE_FILE, Picture, Servable, Worker
from ganseg.metrics import scores
from ganseg.segmenter.evaluation import check_model_fits_data
from ganseg.segmenter.export import load_model
from ganseg.viz import sample_grid

GRID_DIR = "training/samples"
GRID_ROWS = 4
VAL_SEED = 0  # the same noise every epoch, so that epochs compare
JUDGE_BATCH = 32


class ImagegenJob:
    stage = "train_imagegen"
    title = "image generator"
    score = "val_judge_miou"
    model_key = ImagegenState.model_key
    batch_norm = False
    train_speed_options = False

    def __init__(self, params: Params, data_dir: Path, options: dict):
        """options: judge, the judge segmenter's folder."""
        self.params, self.cfg, self.data_dir = params, params.imagegen, Path(data_dir)
        self.judge_dir = Path(options["judge"])
        self.stats = read_dataset_stats(self.data_dir)
        self.epochs = self.cfg.epochs

    def check_inputs(self) -> None:
        """The judge must read this data."""
        check_model_fits_data(load_model(self.judge_dir)[1], self.stats, self.judge_dir, self.data_dir)

    def fresh_state(self, place=lambda network: network) -> ImagegenState:
        """Both networks initialised from params.seed."""
        torch.manual_seed(self.params.seed)
        return build_state(self.cfg, self.stats.num_classes, self.stats.channels, place)

    def start(self, worker: Worker) -> dict:
        self.worker = worker
        self.judge = load_model(self.judge_dir)[0].to(worker.device)
        self.state = self.fresh_state(worker.place)
        from ganseg.data.augment import pair_transform  # torchvision: 2 s to import, for the workers only

        train_set = PreparedSplit(self.data_dir, "train", pair_transform(self.cfg.augment, self.stats.image_size))
        self.train_loader = worker.loader(train_set, self.cfg.batch_size)
        self.val_set = PreparedSplit(self.data_dir, "val")
        shard = shard_indices(len(self.val_set), worker.rank, worker.world)
        self.val_masks = torch.from_numpy(self.val_set.masks[shard]).long()
        return {STATE_FILE: self.state}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.worker.set_epoch(self.train_loader, epoch)
        started = time.perf_counter()
        means = train_epoch(self.state, self.train_loader, self.cfg)
        rate = torch.tensor([len(self.train_loader) * self.cfg.batch_size / (time.perf_counter() - started)])
        confusion = self.worker.summed(self.judged(self.val_masks))
        return {**means, "images_per_s": self.worker.summed(rate).item(), self.score: scores(confusion.cpu())["miou"]}

    def judged(self, masks: torch.Tensor) -> torch.Tensor:
        """The judge's confusion matrix on images drawn from `masks` (this worker's validation share)."""
        drawn = [sample(self.state.eval_generator, masks[start:start + JUDGE_BATCH], self.stats.num_classes,
                        seed=VAL_SEED + start) for start in range(0, len(masks), JUDGE_BATCH)]
        return judge_confusion(self.judge, torch.cat(drawn), masks, self.stats.num_classes, JUDGE_BATCH)

    def picture(self, epoch: int) -> Picture:
        """mask | real | imagegen.samples drawn images, for the same validation masks every epoch."""
        rows = grid_rows(self.val_set.masks, GRID_ROWS)
        masks = torch.from_numpy(self.val_set.masks[rows]).long()
        drawn = torch.stack([sample(self.state.eval_generator, masks, self.stats.num_classes, seed=VAL_SEED + k)
                             for k in range(self.cfg.samples)], dim=1)
        grid = sample_grid(self.val_set.masks[rows], self.val_set.images[rows], drawn.numpy())
        return Picture(grid, f"{GRID_DIR}/epoch_{epoch:04d}.png")

    def run_key_parts(self) -> list:
        """The MLflow run of the judge."""
        return [self.stage, load_model(self.judge_dir)[1].mlflow_run_id]

    def export(self, folder: Path, best: dict, run_id: str | None) -> dict:
        summary = {"best_epoch": best["epoch"], f"best_{self.score}": best["history"][-1][self.score],
                   "mlflow_run_id": run_id}
        card = ImagegenCard.for_data(self.cfg, self.params.data, self.stats, mlflow_run_id=run_id)
        export_image_generator(folder, weights_to_export(best, self.model_key), card)
        return summary

    def servable(self, folder: Path) -> Servable:
        """Served, it takes masks: the example is one of the training tiles' size, all background."""
        card = load_image_generator(folder)[1]
        return Servable("image_generator", folder, folder / IMAGEGEN_CARD, png_bytes(example_mask(card)))

    def note_registration(self, folder: Path, registered: dict) -> None:
        write_imagegen_card(folder, load_image_generator(folder)[1].model_copy(update=registered))
