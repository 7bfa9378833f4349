"""Held-out evaluation at full resolution: metrics (with boundary F1), the majority-class baseline, report files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ganseg.contracts import DatasetStats, ModelCard
from ganseg.data.datasets import full_size_test
from ganseg.data.void import VOID
from ganseg.errors import CheckpointError
from ganseg.fileio import write_json
from ganseg.metrics import BoundaryF1, confusion_matrix, majority_class_confusion, scores
from ganseg.segmenter.inference import segment_image
from ganseg.viz import comparison_strip, save_confusion_matrix, save_per_class_bars


@dataclass
class FullSizeResult:
    confusion: torch.Tensor  # (K, K) pixel counts over every test image at its own size, void left out
    boundary_f1: list[float]  # per class
    num_images: int
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (image, truth, prediction) of the first few
    void_pixels: int = 0  # test pixels whose truth is void, scored by no metric


@torch.no_grad()
def evaluate_full_size(
    generator: nn.Module,
    data_dir: Path,
    stats: DatasetStats,
    tolerance: int = 2,
    keep: int = 8,
    progress: bool = True,
    flips: bool = False,
) -> FullSizeResult:
    """Segment every test image at its own size (sliding windows or resize, as the model was trained;
    with `flips`, averaged over the mirror images)."""
    generator.eval()
    num_classes = stats.num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    boundary = BoundaryF1(num_classes, tolerance)
    samples, count, void = [], 0, 0
    test_images = full_size_test(data_dir)
    for image, truth in tqdm(test_images, total=stats.test_images, desc="evaluate", unit="img",
                             disable=not progress):
        pred = segment_image(generator, image, stats.image_size, stats.fit, flips)
        pred_t, truth_t = torch.from_numpy(pred), torch.from_numpy(truth)
        confusion += confusion_matrix(pred_t, truth_t, num_classes)
        boundary.update(pred_t[None], truth_t[None])
        void += int((truth == VOID).sum())
        if len(samples) < keep:
            samples.append((image, truth, pred))
        count += 1
    return FullSizeResult(confusion, boundary.scores(), count, samples, void)


def check_model_fits_data(card: ModelCard, stats: DatasetStats, model_dir: Path, data_dir: Path) -> None:
    """A model trained for other classes or channels would give meaningless scores: refuse it."""
    model = (card.num_classes, card.in_channels, card.class_names)
    data = (stats.num_classes, stats.channels, stats.class_names)
    if model != data:
        raise CheckpointError(
            f"{model_dir} was trained for classes {model[2]} on {model[1]}-channel images, but {data_dir} holds"
            f" classes {data[2]} with {data[1]} channel(s): train again on this data (ganseg train)"
        )


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def summarise(
    confusion: torch.Tensor, class_names: list[str], train_frequency: list[float], boundary_f1: list[float] | None = None
) -> dict:
    """Test scores, plus those of the trivial predictor that outputs the training majority class
    (both on the pixels in `confusion`: void pixels are never in it)."""
    s = scores(confusion)
    boundary = {}
    if boundary_f1 is not None:
        kept = [v for v in boundary_f1 if not math.isnan(v)]
        boundary = {
            "boundary_f1": {n: _clean(v) for n, v in zip(class_names, boundary_f1)},
            "mean_boundary_f1": _clean(sum(kept) / len(kept)) if kept else None,
        }
    trivial = scores(majority_class_confusion(confusion, int(np.argmax(train_frequency))))
    return {
        "miou": _clean(s["miou"]),
        "mdice": _clean(s["mdice"]),
        "pixel_accuracy": _clean(s["pixel_accuracy"]),
        "iou": {n: _clean(v) for n, v in zip(class_names, s["iou"])},
        "dice": {n: _clean(v) for n, v in zip(class_names, s["dice"])},
        **boundary,
        "majority_baseline": {"miou": _clean(trivial["miou"]), "pixel_accuracy": _clean(trivial["pixel_accuracy"])},
    }


def write_report(result: FullSizeResult, stats: DatasetStats, out_dir: Path, num_overlays: int, tolerance: int) -> dict:
    """metrics.json, per_class.csv, confusion_matrix.png, per_class_iou.png and overlays/ in out_dir."""
    class_names = stats.class_names
    summary = summarise(result.confusion, class_names, stats.train_frequency, result.boundary_f1)
    metrics = {
        "test": summary,
        "num_test_images": result.num_images,
        "scored_pixels": int(result.confusion.sum()),
        "void_pixels": result.void_pixels,
        "resolution": "full: every test image at its own size",
        "boundary_tolerance_px": tolerance,
    }
    write_json(out_dir / "metrics.json", metrics)
    table = pd.DataFrame({
        "class": class_names, "iou": summary["iou"].values(), "dice": summary["dice"].values(),
        "boundary_f1": summary["boundary_f1"].values(),
    })
    table.to_csv(out_dir / "per_class.csv", index=False)
    save_confusion_matrix(result.confusion.numpy(), class_names, out_dir / "confusion_matrix.png")
    save_per_class_bars(summary["iou"], "Test IoU per class", out_dir / "per_class_iou.png")
    overlays = out_dir / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    for i, (image, truth, pred) in enumerate(result.samples[:num_overlays]):
        comparison_strip(image, truth, pred).save(overlays / f"test_{i:03d}.png")
    return metrics
