import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from ganseg.metrics import confusion_matrix, majority_class_confusion, scores


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
