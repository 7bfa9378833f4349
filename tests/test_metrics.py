import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from ganseg.metrics import (
    BoundaryF1,
    confusion_matrix,
    majority_class_confusion,
    scores,
)


def test_hand_computed_case():
    truth = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores(cm)
    # IoU: class0 1/(2+2-1)=1/3, class1 2/(2+3-2)=2/3, class2 1/(2+1-1)=1/2
    assert s["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert s["dice"] == pytest.approx([2 / 4, 4 / 5, 2 / 3])
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)


def test_absent_class_is_left_out_of_the_mean():
    truth = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    s = scores(confusion_matrix(pred, truth, 3))
    assert math.isnan(s["iou"][2]) and math.isnan(s["dice"][2])
    assert s["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_matches_torchmetrics_per_class_iou():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (3, 16, 16), generator=gen)
    pred = torch.where(torch.rand(3, 16, 16, generator=gen) < 0.6, truth, torch.randint(0, 4, (3, 16, 16), generator=gen))
    ours = scores(confusion_matrix(pred, truth, 4))["iou"]
    reference = MulticlassJaccardIndex(num_classes=4, average=None)(pred, truth)
    assert ours == pytest.approx(reference.tolist(), abs=1e-6)


def test_majority_baseline_predicts_one_class():
    cm = torch.tensor([[8, 2], [1, 3]])
    trivial = majority_class_confusion(cm, 0)
    assert trivial.tolist() == [[10, 0], [4, 0]]
    s = scores(trivial)
    assert s["iou"] == pytest.approx([10 / 14, 0.0])


def _with_absent_class():
    """4 classes; class 3 appears in neither prediction nor truth, class 2 only in the prediction."""
    gen = torch.Generator().manual_seed(4)
    truth = torch.randint(0, 2, (2, 12, 12), generator=gen)
    pred = torch.where(torch.rand(2, 12, 12, generator=gen) < 0.7, truth, torch.randint(0, 3, (2, 12, 12), generator=gen))
    assert 3 not in truth and 3 not in pred and 2 in pred and 2 not in truth
    return pred, truth


def test_means_match_torchmetrics_with_an_absent_class():
    from torchmetrics.segmentation import DiceScore, MeanIoU

    pred, truth = _with_absent_class()
    ours = scores(confusion_matrix(pred, truth, 4))
    assert ours["miou"] == pytest.approx(MulticlassJaccardIndex(num_classes=4, average="macro")(pred, truth).item())
    # torchmetrics' segmentation metrics average per image: stack the images into one to pool the pixels
    pooled_pred, pooled_truth = pred.reshape(1, -1, 12), truth.reshape(1, -1, 12)
    dice = DiceScore(num_classes=4, input_format="index", average="macro")(pooled_pred, pooled_truth)
    assert ours["mdice"] == pytest.approx(dice.item())
    per_image_free = MeanIoU(num_classes=4, input_format="index", per_class=True)(pooled_pred, pooled_truth)
    assert per_image_free[3].item() == -1  # torchmetrics' marker for a class absent from both
    assert math.isnan(ours["iou"][3]) and math.isnan(ours["dice"][3])  # not 0, not 1: left out of the means
    assert ours["iou"][2] == 0.0  # predicted but never true: a real 0, kept in the mean
    assert ours["iou"][:3] == pytest.approx(per_image_free[:3].tolist())


def _reference_boundary_f1(pred: np.ndarray, truth: np.ndarray, cls: int, tolerance: int) -> float:
    """An independent implementation with scipy: boundaries by erosion, distances by a chessboard transform."""
    from scipy import ndimage

    def edge(region):
        return region & ~ndimage.binary_erosion(region, np.ones((3, 3)), border_value=1)

    def near(points):
        if not points.any():
            return np.zeros_like(points)
        return ndimage.distance_transform_cdt(~points, metric="chessboard") <= tolerance

    p_edge, t_edge = edge(pred == cls), edge(truth == cls)
    if not p_edge.any() and not t_edge.any():
        return float("nan")
    precision = (p_edge & near(t_edge)).sum() / p_edge.sum() if p_edge.any() else 0.0
    recall = (t_edge & near(p_edge)).sum() / t_edge.sum() if t_edge.any() else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@pytest.mark.parametrize("tolerance", [0, 1, 3])
def test_boundary_f1_matches_an_independent_implementation(tolerance):
    rng = np.random.default_rng(tolerance)
    truth = np.zeros((40, 50), np.int64)
    truth[5:25, 8:30] = 1
    truth[28:36, 30:45] = 2
    noisy = np.where(rng.random(truth.shape) < 0.05, rng.integers(0, 3, truth.shape), truth)
    pred = np.roll(noisy, 1, axis=1)
    metric = BoundaryF1(4, tolerance)
    metric.update(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None])
    ours = metric.scores()
    for cls in range(4):
        expected = _reference_boundary_f1(pred, truth, cls, tolerance)
        if math.isnan(expected):
            assert math.isnan(ours[cls])
        else:
            assert ours[cls] == pytest.approx(expected)
