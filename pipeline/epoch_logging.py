"""Per-epoch extras for MLflow: every `mlflow.log_images_every` epochs, a grid of validation
overlays logged by the chief worker.
Pure PyTorch + MLflow, no Ray."""

from __future__ import annotations

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from ganseg.config import Params
from ganseg.segmenter.inference import predict_classes
from ganseg.segmenter.training import TrainingState
from ganseg.viz import overlay_grid

PREVIEW_IMAGES = 4
OVERLAY_DIR = "training/overlays"


def images_due(epoch: int, every: int, last_epoch: int) -> bool:
    """Every `every` epochs and at the last one; never when `every` is 0."""
    return every > 0 and (epoch % every == 0 or epoch == last_epoch)


@torch.no_grad()
def preview_grid(generator: nn.Module, dataset, count: int = PREVIEW_IMAGES):
    """Overlays of the first `count` samples of `dataset` (the same ones every epoch, to watch progress)."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    images = torch.stack([image for image, _ in samples])
    truth = torch.stack([mask for _, mask in samples])
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    preds = predict_classes(generator, images.to(device)).cpu()
    generator.train(was_training)
    return overlay_grid(images.numpy(), truth.numpy().astype(np.uint8), preds.numpy().astype(np.uint8))


def log_overlays_if_due(
    client: MlflowClient, run_id: str, state: TrainingState, val_set, params: Params, epoch: int
) -> None:
    """The validation overlay grid of this epoch, as an image artifact, when `images_due`."""
    if images_due(epoch, params.mlflow.log_images_every, params.train.epochs):
        # The plain module: a DDP wrapper's forward on one rank alone could wait for the others.
        grid = preview_grid(state.eval_generator, val_set)
        client.log_image(run_id, grid, artifact_file=f"{OVERLAY_DIR}/epoch_{epoch:04d}.png")
