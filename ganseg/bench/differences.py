"""The test images on which two configurations differ most: what `bench quality --figure` draws.

Both are scored image by image on the same test images (first seed), by the Dice of class 1 for
two-class tasks (the structure of interest, e.g. vessels) and by mIoU otherwise, void left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganseg.metrics import confusion_matrix, scores


@dataclass(frozen=True)
class Difference:
    index: int
    image: np.ndarray  # (H, W, C) uint8
    truth: np.ndarray  # (H, W) class ids, void included
    predictions: tuple[np.ndarray, np.ndarray]  # reference's, contender's
    scores: tuple[float, float]


def image_score(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Dice of class 1 for two classes, else mIoU, over the image's annotated pixels."""
    confusion = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), num_classes)
    result = scores(confusion)
    return result["dice"][1] if num_classes == 2 else result["miou"]


def largest_differences(reference: list, contender: list, num_classes: int, count: int = 3) -> list[Difference]:
    """The `count` images with the largest |contender - reference| score, largest first; each list
    holds (image, truth, prediction) per test image, in the same order."""
    rows = []
    for index, ((image, truth, pred_a), (_, _, pred_b)) in enumerate(zip(reference, contender)):
        pair = (image_score(pred_a, truth, num_classes), image_score(pred_b, truth, num_classes))
        rows.append(Difference(index, image, truth, (pred_a, pred_b), pair))
    rows.sort(key=lambda row: -abs(np.nan_to_num(row.scores[1] - row.scores[0])))
    return rows[:count]
