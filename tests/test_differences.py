"""Which test images `bench quality --figure` draws: those where two configurations differ most."""

import numpy as np
import pytest

from ganseg.bench.differences import image_score, largest_differences
from ganseg.data.void import VOID


def _image(truth, pred):
    return np.zeros((*truth.shape, 1), np.uint8), truth, pred


def test_image_score_is_the_foreground_dice_of_two_classes_and_ignores_void():
    truth = np.array([[1, 1, 0, VOID]], np.uint8)
    pred = np.array([[1, 0, 0, 1]], np.uint8)
    assert image_score(pred, truth, 2) == pytest.approx(2 * 1 / (2 + 1))  # the void pixel's 1 is not counted


def test_image_score_is_the_miou_of_more_classes():
    truth = np.array([[0, 1, 2, 2]], np.uint8)
    assert image_score(truth.copy(), truth, 3) == pytest.approx(1.0)
    assert image_score(np.array([[0, 1, 2, 0]], np.uint8), truth, 3) == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_largest_differences_come_first_whichever_side_wins():
    truth = np.array([[1, 1, 0, 0]], np.uint8)
    wrong = np.zeros_like(truth)
    half = np.array([[1, 0, 0, 0]], np.uint8)
    reference = [_image(truth, truth), _image(truth, wrong), _image(truth, half)]
    contender = [_image(truth, truth), _image(truth, truth), _image(truth, wrong)]
    rows = largest_differences(reference, contender, num_classes=2, count=2)
    assert [row.index for row in rows] == [1, 2]  # +1.0 for the contender, then -0.667
    assert rows[1].scores == pytest.approx((2 / 3, 0.0))
    assert rows[0].predictions[1] is contender[1][2]


def test_the_disagreement_map_colours_who_is_right_where():
    from ganseg.viz import VOID_GREY, disagreement

    truth = np.array([[1, 1, 0, VOID]], np.uint8)
    reference = np.array([[1, 0, 1, 0]], np.uint8)
    contender = np.array([[1, 1, 0, 1]], np.uint8)
    picture = disagreement(truth, reference, contender)
    assert picture[0].tolist() == [[255, 255, 255], [0, 170, 0], [0, 170, 0], list(VOID_GREY)]
    assert disagreement(truth, contender, reference)[0, 1].tolist() == [200, 0, 200]
