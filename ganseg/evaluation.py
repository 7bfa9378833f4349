"""Held-out evaluation: metrics, the majority-class baseline, and report files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from ganseg.data import PreparedSplit
from ganseg.engine import CheckpointError, predict
from ganseg.fileio import write_json
from ganseg.metrics import confusion_matrix, majority_class_confusion, scores
from ganseg.viz import comparison_strip, save_confusion_matrix, save_per_class_bars


def predict_split(generator: nn.Module, data_dir: Path, split: str, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, truth, predictions) of a whole prepared split, as numpy arrays."""
    dataset = PreparedSplit(data_dir, split)
    preds = [predict(generator, images) for images, _ in DataLoader(dataset, batch_size=batch_size)]
    return np.array(dataset.images), np.array(dataset.masks), torch.cat(preds).numpy().astype(np.uint8)


def check_model_fits_data(card: dict, stats: dict, model_dir: Path, data_dir: Path) -> None:
    """A model trained for other classes or channels would give meaningless scores: refuse it."""
    model = (card["num_classes"], card["in_channels"], card.get("class_names"))
    data = (stats["num_classes"], stats["channels"], stats["class_names"])
    if model != data:
        raise CheckpointError(
            f"{model_dir} was trained for classes {model[2]} on {model[1]}-channel images, but {data_dir} holds"
            f" classes {data[2]} with {data[1]} channel(s): train again on this data (ganseg train)"
        )


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def summarise(confusion: torch.Tensor, class_names: list[str], train_frequency: list[float]) -> dict:
    """Test scores, plus those of the trivial predictor that outputs the training majority class."""
    s = scores(confusion)
    trivial = scores(majority_class_confusion(confusion, int(np.argmax(train_frequency))))
    return {
        "miou": _clean(s["miou"]),
        "mdice": _clean(s["mdice"]),
        "pixel_accuracy": _clean(s["pixel_accuracy"]),
        "iou": {n: _clean(v) for n, v in zip(class_names, s["iou"])},
        "dice": {n: _clean(v) for n, v in zip(class_names, s["dice"])},
        "majority_baseline": {"miou": _clean(trivial["miou"]), "pixel_accuracy": _clean(trivial["pixel_accuracy"])},
    }


def write_report(
    images: np.ndarray,
    truth: np.ndarray,
    preds: np.ndarray,
    stats: dict,
    out_dir: Path,
    num_overlays: int,
) -> dict:
    """metrics.json, per_class.csv, confusion_matrix.png, per_class_iou.png and overlays/ in out_dir."""
    class_names = stats["class_names"]
    confusion = confusion_matrix(torch.from_numpy(preds), torch.from_numpy(truth), len(class_names))
    summary = summarise(confusion, class_names, stats["class_frequency"]["train"])
    metrics = {"test": summary, "num_test_images": int(len(images))}
    write_json(out_dir / "metrics.json", metrics)
    table = pd.DataFrame({"class": class_names, "iou": summary["iou"].values(), "dice": summary["dice"].values()})
    table.to_csv(out_dir / "per_class.csv", index=False)
    save_confusion_matrix(confusion.numpy(), class_names, out_dir / "confusion_matrix.png")
    save_per_class_bars(summary["iou"], "Test IoU per class", out_dir / "per_class_iou.png")
    overlays = out_dir / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    for i in range(min(num_overlays, len(images))):
        comparison_strip(images[i].transpose(1, 2, 0), truth[i], preds[i]).save(overlays / f"test_{i:03d}.png")
    return metrics
