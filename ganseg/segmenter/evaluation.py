"""Held-out evaluation at full resolution: metrics (with boundary F1 and, for two classes, AUC-ROC
and AUC-PR), the majority-class baseline, report files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ganseg.contracts import DatasetStats, ModelCard
from ganseg.data.datasets import PreparedSplit, full_size_test
from ganseg.data.void import VOID
from ganseg.errors import CheckpointError
from ganseg.fileio import write_json
from ganseg.metrics import (
    BinaryAUC,
    BoundaryF1,
    confusion_matrix,
    majority_class_confusion,
    scores,
)
from ganseg.segmenter.inference import logit_strips
from ganseg.viz import comparison_strip, save_confusion_matrix, save_per_class_bars


@dataclass
class FullSizeResult:
    confusion: torch.Tensor  # (K, K) pixel counts over every test image at its own size, void left out
    boundary_f1: list[float]  # per class
    num_images: int
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (image, truth, prediction) of the first few
    void_pixels: int = 0  # test pixels whose truth is void, scored by no metric
    auc: dict[str, float] | None = None  # binary tasks: auc_roc and auc_pr of class 1's probability


SPLITS = ("test", "val")


def scored_images(data_dir: Path, split: str = "test") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image (H, W, C) uint8, mask (H, W) uint8) pairs to score: every test image at its own size,
    or, for "val", the validation tiles as prepared (prepare keeps only the test images whole): cut
    from the images with data.fit tile, the whole images resized with data.fit resize."""
    if split == "test":
        yield from full_size_test(data_dir)
    elif split == "val":
        for image, mask in PreparedSplit(data_dir, "val"):
            yield image.permute(1, 2, 0).numpy(), mask.numpy().astype(np.uint8)
    else:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def scored_description(stats: DatasetStats, split: str = "test") -> str:
    """What `split` scores, in words for reports."""
    if split == "test":
        return f"{stats.test_images} test images at full size"
    shape = "tiles of" if stats.fit == "tile" else "images resized to"
    return f"{stats.counts['val']} validation {shape} {stats.image_size} px"


@torch.no_grad()
def evaluate_full_size(
    segmenter: nn.Module,
    data_dir: Path,
    stats: DatasetStats,
    tolerance: int = 2,
    keep: int = 8,
    progress: bool = True,
    flips: bool = False,
    split: str = "test",
) -> FullSizeResult:
    """Segment every test image at its own size (sliding windows or resize, as the model was trained;
    with `flips`, averaged over the mirror images). With `split="val"`, the validation tiles instead.

    A two-class task is also scored without a threshold: the softmax of the (flip-averaged) logits
    gives class 1's probability at every pixel, ranked against the truth by AUC-ROC and AUC-PR."""
    segmenter.eval()
    device = next(segmenter.parameters()).device
    num_classes = stats.num_classes
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    boundary = BoundaryF1(num_classes, tolerance)
    auc = BinaryAUC() if num_classes == 2 else None
    samples, count, void = [], 0, 0
    total = stats.test_images if split == "test" else stats.counts["val"]
    for image, truth in tqdm(scored_images(data_dir, split), total=total, desc="evaluate", unit="img",
                             leave=False, disable=not progress):
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
        prediction = np.empty(truth.shape, np.uint8)
        for top, logits in logit_strips(segmenter, x, stats.image_size, stats.fit, flips):  # bounded memory
            rows = slice(top, top + logits.shape[1])
            pred_t, truth_t = logits.argmax(0).cpu().to(torch.uint8), torch.from_numpy(truth[rows])
            confusion += confusion_matrix(pred_t, truth_t, num_classes)
            if auc is not None:
                auc.update(logits.softmax(0)[1].cpu(), truth_t)
            prediction[rows] = pred_t.numpy()
        boundary.update(torch.from_numpy(prediction)[None], torch.from_numpy(truth)[None])
        void += int((truth == VOID).sum())
        if len(samples) < keep:
            samples.append((image, truth, prediction))
        count += 1
    return FullSizeResult(confusion, boundary.scores(), count, samples, void, auc.scores() if auc else None)


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
    confusion: torch.Tensor,
    class_names: list[str],
    train_frequency: list[float],
    boundary_f1: list[float] | None = None,
    auc: dict[str, float] | None = None,
) -> dict:
    """Test scores, plus those of the trivial predictor that outputs the training majority class
    (both on the pixels in `confusion`: void pixels are never in it). `auc` (two classes only) adds
    auc_roc and auc_pr; a multi-class summary has neither."""
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
        **({name: _clean(value) for name, value in auc.items()} if auc is not None else {}),
        "majority_baseline": {"miou": _clean(trivial["miou"]), "pixel_accuracy": _clean(trivial["pixel_accuracy"])},
    }


def write_report(result: FullSizeResult, stats: DatasetStats, out_dir: Path, num_overlays: int, tolerance: int) -> dict:
    """metrics.json, per_class.csv, confusion_matrix.png, per_class_iou.png and overlays/ in out_dir."""
    class_names = stats.class_names
    summary = summarise(result.confusion, class_names, stats.train_frequency, result.boundary_f1, result.auc)
    metrics = {
        "test": summary,
        "num_test_images": result.num_images,
        "scored_pixels": int(result.confusion.sum()),
        "void_pixels": result.void_pixels,
        "resolution": "full: every test image at its own size",
        "boundary_tolerance_px": tolerance,
        **({"auc_positive_class": class_names[1]} if result.auc is not None else {}),
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
