"""Property-based tests: mask decoding round trips and the laws the segmentation scores obey."""

import io
import math

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from ganseg.config import DataConfig
from ganseg.data.sources import mask_to_ids
from ganseg.metrics import confusion_matrix, scores

quick = settings(max_examples=60, deadline=None)
shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@st.composite
def id_masks(draw, min_classes=2, max_classes=12):
    """(class count, an (H, W) uint8 mask of ids below it)."""
    classes = draw(st.integers(min_classes, max_classes))
    mask = draw(arrays(np.uint8, draw(shapes), elements=st.integers(0, classes - 1)))
    return classes, mask


def through_png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    buffer.seek(0)
    return Image.open(buffer)


def ids_config(classes, **extra):
    return DataConfig(class_names=[f"c{i}" for i in range(classes)], **extra)


@quick
@given(id_masks(), st.sampled_from([np.uint8, np.uint16]))
def test_id_masks_round_trip_through_png(case, dtype):
    classes, mask = case
    decoded = mask_to_ids(through_png(mask.astype(dtype)), ids_config(classes))
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, mask)


@quick
@given(id_masks(), st.lists(st.integers(0, 255), min_size=1, max_size=5))
def test_values_outside_the_class_map_are_named(case, strays):
    classes, mask = case
    strays = [v for v in strays if v >= classes] or [classes]
    flat = mask.reshape(-1).copy()
    flat[: len(strays)] = strays[: flat.size]
    named = sorted(set(strays[: flat.size]))
    try:
        mask_to_ids(through_png(flat.reshape(mask.shape)), ids_config(classes))
    except ValueError as err:
        assert f"mask values {named[:8]} are not class ids 0..{classes - 1}" in str(err)
    else:
        raise AssertionError("values outside the class map were accepted")


@quick
@given(arrays(np.uint8, shapes))
def test_binary_masks_split_at_128(grey):
    decoded = mask_to_ids(through_png(grey), ids_config(2, mask_format="binary"))
    assert np.array_equal(decoded, (grey >= 128).astype(np.uint8))


@quick
@given(id_masks(max_classes=2))
def test_binary_masks_round_trip_through_0_and_255(case):
    _, mask = case
    assert np.array_equal(mask_to_ids(through_png(mask * 255), ids_config(2, mask_format="binary")), mask)


colours = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@st.composite
def rgb_cases(draw):
    """(palette 'R,G,B' -> id, its colours in id order, an id mask)."""
    palette_colours = draw(st.lists(colours, min_size=2, max_size=8, unique=True))
    classes, mask = draw(id_masks(min_classes=len(palette_colours), max_classes=len(palette_colours)))
    palette = {",".join(map(str, c)): i for i, c in enumerate(palette_colours)}
    return palette, np.array(palette_colours, np.uint8), mask


@quick
@given(rgb_cases())
def test_rgb_masks_round_trip_through_the_palette(case):
    palette, table, mask = case
    cfg = ids_config(len(table), mask_format="rgb", palette=palette)
    assert np.array_equal(mask_to_ids(through_png(table[mask]), cfg), mask)


@quick
@given(rgb_cases(), colours)
def test_a_colour_outside_the_palette_is_named(case, stray):
    palette, table, mask = case
    assume(",".join(map(str, stray)) not in palette)
    rgb = table[mask]
    rgb[0, 0] = stray
    cfg = ids_config(len(table), mask_format="rgb", palette=palette)
    try:
        mask_to_ids(through_png(rgb), cfg)
    except ValueError as err:
        assert str(stray) in str(err) and "not in data.palette" in str(err)
    else:
        raise AssertionError("a colour outside the palette was accepted")


def same(a, b):
    """Equal lists of floats, NaN equal to NaN."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or math.isclose(x, y) for x, y in zip(a, b))


@st.composite
def prediction_pairs(draw):
    """(classes, truth, prediction) as int64 tensors of one shape."""
    classes = draw(st.integers(2, 8))
    shape = draw(shapes)
    truth = draw(arrays(np.int64, shape, elements=st.integers(0, classes - 1)))
    pred = draw(arrays(np.int64, shape, elements=st.integers(0, classes - 1)))
    return classes, torch.from_numpy(truth), torch.from_numpy(pred)


@quick
@given(prediction_pairs())
def test_a_mask_against_itself_scores_one_for_every_present_class(case):
    classes, truth, _ = case
    s = scores(confusion_matrix(truth, truth, classes))
    present = set(truth.unique().tolist())
    for c in range(classes):
        if c in present:
            assert s["iou"][c] == 1.0 and s["dice"][c] == 1.0
        else:
            assert math.isnan(s["iou"][c]) and math.isnan(s["dice"][c])
    assert s["miou"] == 1.0 and s["mdice"] == 1.0 and s["pixel_accuracy"] == 1.0


@quick
@given(prediction_pairs())
def test_scores_are_symmetric_in_truth_and_prediction(case):
    classes, truth, pred = case
    forward, backward = confusion_matrix(pred, truth, classes), confusion_matrix(truth, pred, classes)
    assert torch.equal(forward, backward.T)
    a, b = scores(forward), scores(backward)
    assert same(a["iou"], b["iou"]) and same(a["dice"], b["dice"])
    assert same([a["miou"], a["mdice"], a["pixel_accuracy"]], [b["miou"], b["mdice"], b["pixel_accuracy"]])


@quick
@given(prediction_pairs(), st.integers(1, 5))
def test_absent_classes_never_enter_the_mean(case, unused):
    classes, truth, pred = case
    s = scores(confusion_matrix(pred, truth, classes))
    present = sorted(set(truth.unique().tolist()) | set(pred.unique().tolist()))
    assert math.isclose(s["miou"], sum(s["iou"][c] for c in present) / len(present))
    wider = scores(confusion_matrix(pred, truth, classes + unused))  # classes nobody uses
    assert all(math.isnan(v) for v in wider["iou"][classes:])
    assert same([wider["miou"], wider["mdice"], wider["pixel_accuracy"]], [s["miou"], s["mdice"], s["pixel_accuracy"]])


@quick
@given(prediction_pairs())
def test_dice_follows_from_iou_and_both_lie_in_0_1(case):
    classes, truth, pred = case
    s = scores(confusion_matrix(pred, truth, classes))
    for iou, dice in zip(s["iou"], s["dice"]):
        if not math.isnan(iou):
            assert 0.0 <= iou <= dice <= 1.0
            assert math.isclose(dice, 2 * iou / (1 + iou), abs_tol=1e-12)
