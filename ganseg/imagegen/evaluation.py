"""The image generator judged on the test tiles: what the evaluate_imagegen stage and
`ganseg bench imagegen` report. Pure PyTorch; the judge is a trained segmenter (see quality.py).

For every test mask the generator draws `samples` images. Reported:
- judge mIoU on the generated images against their masks, on the real test images, and the ratio;
- KID between the first image drawn per mask and the real test images (judge features);
- diversity between the images drawn from one mask;
- memorisation: the median distance to the nearest training image, of generated and of real test
  images, and their ratio (well below 1 = generated images sit closer to training images than new
  real ones do).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganseg.contracts import DatasetStats, ImagegenCard
from ganseg.data.datasets import PreparedSplit
from ganseg.data.void import VOID
from ganseg.errors import CheckpointError
from ganseg.imagegen.quality import diversity, judge_miou, kid, nearest_train_distance
from ganseg.imagegen.training import sample

SAMPLE_BATCH = 32


def stacked(data_dir, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All tiles of a prepared split: uint8 images (N, C, H, W) and masks (N, H, W)."""
    dataset = PreparedSplit(data_dir, split)
    return torch.from_numpy(np.array(dataset.images)), torch.from_numpy(np.array(dataset.masks)).long()


def grid_rows(masks: np.ndarray, count: int) -> list[int]:
    """The `count` masks to show in a grid: the most annotated ones (a mask of void alone, outside a
    field of view, shows nothing), in their order in the split."""
    void_share = (np.asarray(masks) == VOID).reshape(len(masks), -1).mean(axis=1)
    return sorted(np.argsort(void_share, kind="stable")[:count].tolist())


def draw(generator: nn.Module, masks: torch.Tensor, num_classes: int, samples: int, seed: int) -> torch.Tensor:
    """`samples` images per mask, (M, K, C, H, W) uint8; the same seed draws the same images."""
    per_sample = []
    for k in range(samples):
        batches = [
            sample(generator, masks[start:start + SAMPLE_BATCH], num_classes, seed=seed * 1_000_003 + k * 10_007 + start)
            for start in range(0, len(masks), SAMPLE_BATCH)
        ]
        per_sample.append(torch.cat(batches))
    return torch.stack(per_sample, dim=1)


def judge_generator(
    generator: nn.Module, judge: nn.Module, data_dir, num_classes: int, samples: int = 3, seed: int = 0
) -> tuple[dict, torch.Tensor]:
    """The figures above for the test split of a prepared folder, and the drawn images (M, K, C, H, W)."""
    real, masks = stacked(data_dir, "test")
    train_images, _ = stacked(data_dir, "train")
    drawn = draw(generator, masks, num_classes, samples, seed)
    real_miou = judge_miou(judge, real, masks, num_classes)
    generated_miou = judge_miou(judge, drawn.flatten(0, 1), masks.repeat_interleave(samples, 0), num_classes)
    kid_mean, kid_std = kid(judge, real, drawn[:, 0], seed=seed)
    generated_distance = float(nearest_train_distance(drawn[:, 0], train_images).median())
    real_distance = float(nearest_train_distance(real, train_images).median())
    figures = {
        "judge_miou_generated": generated_miou,
        "judge_miou_real": real_miou,
        "judge_miou_ratio": generated_miou / real_miou if real_miou else float("nan"),
        "kid": kid_mean,
        "kid_std": kid_std,
        "diversity": diversity(drawn) if samples > 1 else float("nan"),
        "nearest_train_generated": generated_distance,
        "nearest_train_real": real_distance,
        "memorisation_ratio": generated_distance / real_distance if real_distance else float("nan"),
        "test_masks": len(masks),
        "samples_per_mask": samples,
    }
    return figures, drawn


def check_image_generator_fits_data(card: ImagegenCard, stats: DatasetStats, generator_dir: Path, data_dir: Path) -> None:
    """An image generator (its ImagegenCard) drawing other classes or channels than the data holds: refuse it."""
    if (card.class_names, card.channels) != (stats.class_names, stats.channels):
        raise CheckpointError(
            f"{generator_dir} draws {card.channels}-channel images of classes {card.class_names}, but {data_dir}"
            f" holds {stats.channels}-channel images of {stats.class_names}: train the image generator on this"
            " data (ganseg train-imagegen)"
        )
