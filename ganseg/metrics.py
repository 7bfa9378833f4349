"""Segmentation metrics from a confusion matrix.

A class absent from both the prediction and the truth has no IoU or Dice (NaN) and is left out
of the means, rather than counting as 0 or 1.
"""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; rows are the truth, columns the prediction."""
    index = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(confusion: torch.Tensor) -> dict:
    """Per-class IoU and Dice, their means over present classes, and pixel accuracy."""
    confusion = confusion.double()
    true_pos = confusion.diag()
    truth = confusion.sum(1)
    predicted = confusion.sum(0)
    union = truth + predicted - true_pos
    present = union > 0
    nan = torch.full_like(true_pos, float("nan"))
    iou = torch.where(present, true_pos / union.clamp(min=1), nan)
    dice = torch.where(present, 2 * true_pos / (truth + predicted).clamp(min=1), nan)
    total = confusion.sum()
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "miou": _nanmean(iou),
        "mdice": _nanmean(dice),
        "pixel_accuracy": float(true_pos.sum() / total) if total > 0 else float("nan"),
    }


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else float("nan")


def majority_class_confusion(confusion: torch.Tensor, majority: int) -> torch.Tensor:
    """The confusion matrix of the trivial predictor that outputs `majority` everywhere."""
    trivial = torch.zeros_like(confusion)
    trivial[:, majority] = confusion.sum(1)
    return trivial
