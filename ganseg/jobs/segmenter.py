"""The segmenter's training job (the train and tune stages): the GAN segmenter on its shard of the
training tiles, validated on its share of the validation tiles, the confusion matrices of all
workers summed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ganseg.checkpoints import weights_to_export
from ganseg.config import Params
from ganseg.contracts import MODEL_CARD, ModelCard, read_dataset_stats, write_model_card
from ganseg.data.datasets import (
    PreparedSplit,
    labelled_frequency,
    shard_indices,
    training_batches,
)
from ganseg.fileio import png_bytes
from ganseg.jobs.base import STATE_FILE, Picture, Servable, Worker
from ganseg.metrics import scores
from ganseg.segmenter.export import export_model, load_model
from ganseg.segmenter.inference import confusion_over, predict_classes
from ganseg.segmenter.training import (
    BatchMixer,
    TrainingState,
    build_training_state,
    train_epoch,
)
from ganseg.viz import overlay_grid

PREVIEW_IMAGES = 4
OVERLAY_DIR = "training/overlays"


class SegmenterJob:
    stage = "train"
    title = "segmenter"
    train_speed_options = True
    score = "val_miou"
    model_key = TrainingState.model_key

    def __init__(self, params: Params, data_dir: Path, options: dict | None = None):
        self.params, self.data_dir = params, Path(data_dir)
        self.stats = read_dataset_stats(self.data_dir)
        self.epochs = params.train.epochs
        self.batch_norm = params.model.norm == "batch"

    def check_inputs(self) -> None:
        """The plain segmenter reads nothing but the prepared data."""

    def fresh_state(self, place=lambda network: network) -> TrainingState:
        return build_training_state(self.params, self.stats.channels, self.stats.num_classes,
                                    labelled_frequency(self.data_dir, self.params), place)

    def start(self, worker: Worker) -> dict:
        self.worker = worker
        self.state = self.fresh_state(worker.place)
        batch = self.params.train.batch_size
        self.train_loader, self.unlabelled = training_batches(
            self.data_dir, self.params, self.stats.image_size, lambda dataset: worker.loader(dataset, batch))
        self.val_set = PreparedSplit(self.data_dir, "val")
        self.val_loader = DataLoader(Subset(self.val_set, shard_indices(len(self.val_set), worker.rank, worker.world)),
                                     batch_size=self.params.evaluate.batch_size)
        self.mixer = self.generated_pairs()
        return {STATE_FILE: self.state}

    def generated_pairs(self) -> BatchMixer | None:
        """What puts generated pairs into the batches: none for the plain segmenter."""
        return None

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """The epoch's step means, images/s of all workers together, their mean share of time spent
        waiting for data, and the scores of the whole validation set."""
        self.worker.set_epoch(self.train_loader, epoch)
        means = train_epoch(self.state, self.train_loader, self.params.train, self.worker.device, epoch=epoch,
                            unlabelled=self.unlabelled, synthetic=self.mixer)
        confusion = confusion_over(self.state.eval_segmenter, self.val_loader, self.stats.num_classes,
                                   self.worker.device)
        summed = torch.tensor([means.pop("images_per_s"), means.pop("waiting_for_data_share")],
                              device=self.worker.device)
        images_per_s, wait_shares = self.worker.summed(summed).tolist()
        s = scores(self.worker.summed(confusion).cpu())
        per_class = {f"val_dice_{name}": value for name, value in zip(self.stats.class_names, s["dice"])}
        return {**means, "images_per_s": images_per_s, "waiting_for_data_share": wait_shares / self.worker.world,
                "val_miou": s["miou"], "val_mdice": s["mdice"], "val_pixel_accuracy": s["pixel_accuracy"]} | per_class

    def picture(self, epoch: int) -> Picture:
        """Overlays of the first validation tiles (the same ones every epoch, to watch progress)."""
        return Picture(preview_grid(self.state.eval_segmenter, self.val_set), f"{OVERLAY_DIR}/epoch_{epoch:04d}.png")

    def run_key_parts(self) -> list:
        return []

    def export(self, folder: Path, best: dict, run_id: str | None) -> dict:
        summary = {"best_epoch": best["epoch"], f"best_{self.score}": best["history"][-1][self.score],
                   "mlflow_run_id": run_id}
        card = ModelCard.for_data(self.params.model, self.stats, **summary)
        export_model(folder, weights_to_export(best, self.model_key), card)
        return summary

    def servable(self, folder: Path) -> Servable:
        """Served, it takes images: the example is a black one of the training tiles' size."""
        card = load_model(folder)[1]
        shape = (card.image_size, card.image_size) + ((3,) if card.in_channels == 3 else ())
        return Servable("segmenter", folder, folder / MODEL_CARD, png_bytes(np.zeros(shape, np.uint8)))

    def note_registration(self, folder: Path, registered: dict) -> None:
        write_model_card(folder, load_model(folder)[1].model_copy(update=registered))


@torch.no_grad()
def preview_grid(segmenter: nn.Module, dataset, count: int = PREVIEW_IMAGES):
    """Overlays of the first `count` samples of `dataset`; leaves `segmenter`'s training mode as it found it."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    images = torch.stack([image for image, _ in samples])
    truth = torch.stack([mask for _, mask in samples])
    was_training = segmenter.training
    segmenter.eval()
    device = next(segmenter.parameters()).device
    preds = predict_classes(segmenter, images.to(device)).cpu()
    segmenter.train(was_training)
    return overlay_grid(images.numpy(), truth.numpy().astype(np.uint8), preds.numpy().astype(np.uint8))
