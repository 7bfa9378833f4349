import math

import pytest
import torch

from ganseg.metrics import BoundaryF1, boundary


def square(size=16, top=4, left=4, side=6):
    mask = torch.zeros(1, size, size, dtype=torch.long)
    mask[0, top : top + side, left : left + side] = 1
    return mask


def test_boundary_of_a_square_is_its_outline():
    edge = boundary(square()[0:1] == 1)
    assert int(edge.sum()) == 4 * 6 - 4  # the ring of a 6x6 square


def test_identical_masks_score_one_and_absent_classes_nan():
    metric = BoundaryF1(num_classes=3, tolerance=0)
    metric.update(square(), square())
    f1 = metric.scores()
    assert f1[0] == pytest.approx(1.0) and f1[1] == pytest.approx(1.0)
    assert math.isnan(f1[2])


def test_tolerance_forgives_a_one_pixel_shift_only_when_allowed():
    strict, loose = BoundaryF1(2, tolerance=0), BoundaryF1(2, tolerance=1)
    for metric in (strict, loose):
        metric.update(square(left=5), square(left=4))
    assert loose.scores()[1] == pytest.approx(1.0)
    assert strict.scores()[1] < 0.8


def test_missing_prediction_scores_zero():
    metric = BoundaryF1(2, tolerance=2)
    metric.update(torch.zeros_like(square()), square())
    assert metric.scores()[1] == 0.0
