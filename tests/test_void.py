"""Void (unannotated) pixels, data.ignore_index: decoding, losses, discriminator input, metrics, overlays."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganseg.config import DataConfig, ParamsError, SplitConfig, validate_params
from ganseg.data.sources import mask_to_ids
from ganseg.data.void import VOID
from ganseg.errors import DataError
from ganseg.metrics import BoundaryF1, confusion_matrix, scores
from ganseg.segmenter.evaluation import evaluate_full_size, summarise, write_report
from ganseg.segmenter.losses import segmentation_loss, soft_dice_loss, valid_one_hot
from ganseg.segmenter.training import build_networks, build_training_state, train_step
from ganseg.viz import VOID_GREY, comparison_strip, overlay
from tests.conftest import batch, prepare_dataset, write_pair

V = VOID


def data_config(**extra) -> DataConfig:
    return DataConfig(**{"class_names": ["a", "b", "c"], "ignore_index": 255} | extra)


# --- configuration -----------------------------------------------------------------------------


def test_ignore_index_must_not_be_a_class_id():
    with pytest.raises(ParamsError, match=r"data.ignore_index: 2 is a class id \(0..2\).* \(got 2\)"):
        validate_params({"data": {"class_names": ["a", "b", "c"], "ignore_index": 2}})
    assert data_config(ignore_index=3).ignore_index == 3


def test_binary_masks_cannot_use_their_foreground_value_as_void():
    with pytest.raises(ValueError, match="255 is class 1 of binary masks"):
        DataConfig(class_names=["bg", "fg"], mask_format="binary", ignore_index=255)


def test_palette_may_map_colours_to_the_ignore_index_only():
    palette = {"0,0,0": 0, "255,255,255": 9}
    assert data_config(mask_format="rgb", palette=palette, ignore_index=9).palette == palette
    with pytest.raises(ValueError, match="palette class ids \\[9\\] are outside 0..2"):
        data_config(mask_format="rgb", palette=palette, ignore_index=255)


# --- decoding ----------------------------------------------------------------------------------


def test_ids_mask_values_equal_to_ignore_index_become_void():
    mask = Image.fromarray(np.array([[0, 1, 255], [2, 255, 0]], np.uint8))
    assert mask_to_ids(mask, data_config()).tolist() == [[0, 1, V], [2, V, 0]]


def test_16_bit_ids_mask_with_its_own_void_value_is_stored_as_void():
    values = np.array([[0, 65535], [2, 1]], np.uint16)
    mask = Image.fromarray(values)
    assert mask.mode.startswith("I")
    assert mask_to_ids(mask, data_config(ignore_index=65535)).tolist() == [[0, V], [2, 1]]


def test_ids_mask_values_that_are_neither_class_nor_void_are_refused():
    mask = Image.fromarray(np.array([[0, 7, 255]], np.uint8))
    with pytest.raises(ValueError, match=r"mask values \[7\] are not class ids 0..2 nor data.ignore_index 255"):
        mask_to_ids(mask, data_config())


def test_binary_mask_checks_the_void_value_before_thresholding():
    # 200 would be class 1 (>= 128) were it not the ignore_index
    mask = Image.fromarray(np.array([[0, 255, 200, 200]], np.uint8))
    cfg = DataConfig(class_names=["bg", "fg"], mask_format="binary", ignore_index=200)
    assert mask_to_ids(mask, cfg).tolist() == [[0, 1, V, V]]


def test_rgb_palette_entry_of_the_ignore_index_becomes_void_whatever_its_value():
    colours = np.array([[[0, 0, 0], [255, 0, 0], [255, 255, 255]]], np.uint8)
    cfg = DataConfig(
        class_names=["bg", "red"], mask_format="rgb", palette={"0,0,0": 0, "255,0,0": 1, "255,255,255": 7},
        ignore_index=7,
    )
    assert mask_to_ids(Image.fromarray(colours), cfg).tolist() == [[0, 1, V]]


def test_rgb_colours_missing_from_the_palette_are_still_refused():
    colours = np.array([[[0, 0, 0], [0, 200, 0]]], np.uint8)
    cfg = DataConfig(class_names=["bg", "red"], mask_format="rgb", palette={"0,0,0": 0, "255,255,255": 7}, ignore_index=7)
    with pytest.raises(ValueError, match=r"mask colours \[\(0, 200, 0\)\] are not in data.palette"):
        mask_to_ids(Image.fromarray(colours), cfg)


def test_without_ignore_index_a_void_value_is_refused_as_before(tmp_path):
    write_pair(tmp_path / "ds", "x", np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8))
    cfg = DataConfig(source=str(tmp_path / "ds"), class_names=["a", "b"], image_size=8)
    with pytest.raises(DataError, match=r"mask values \[255\] are not class ids 0..1"):
        prepare_dataset(cfg, 0, tmp_path / "out", False)


# --- class statistics --------------------------------------------------------------------------


def test_class_frequencies_and_the_majority_class_ignore_void_pixels(tmp_path):
    # per 10 pixels: 6 void, 3 of class 0, 1 of class 1 -> shares 0.75 / 0.25 of the annotated pixels
    row = np.array([V, V, V, V, V, V, 0, 0, 0, 1], np.uint8)
    for i in range(12):
        write_pair(tmp_path / "ds", f"s{i:02d}", np.zeros((10, 10), np.uint8), np.tile(row, (10, 1)))
    cfg = DataConfig(
        source=str(tmp_path / "ds"), class_names=["a", "b"], image_size=10, fit="tile", ignore_index=255,
        split=SplitConfig(train=0.34, val=0.33, test=0.33),
    )
    stats = prepare_dataset(cfg, 0, tmp_path / "out", False)
    assert stats.train_frequency == pytest.approx([0.75, 0.25])
    assert stats.void_fraction["train"] == pytest.approx(0.6)
    masks = np.load(tmp_path / "out/train_masks.npy")
    assert set(np.unique(masks)) == {0, 1, V}
    # the trivial predictor outputs class 0, the majority of annotated pixels, not "void"
    confusion = torch.tensor([[30, 0], [10, 0]])
    assert summarise(confusion, ["a", "b"], stats.train_frequency)["majority_baseline"]["pixel_accuracy"] == 0.75


# --- losses and the discriminator's input ------------------------------------------------------


def logits_and_void_masks(seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 6, generator=gen)
    target = torch.randint(0, 3, (2, 6, 6), generator=gen)
    target[0, :, :2] = V  # 12 void pixels in the first image
    target[1, 4:, :] = V  # 12 in the second, elsewhere
    target[1, 0, 0] = V
    return logits, target


def valid_only_loss(logits, target, class_weights=None):
    """The loss of each image on its valid pixels alone (gathered into a 1 x M image), averaged over images."""
    losses = []
    for one_logits, one_target in zip(logits, target):
        valid = one_target != V
        kept_logits = one_logits[:, valid][None, :, None, :]  # (1, K, 1, M)
        kept_target = one_target[valid][None, None, :]  # (1, 1, M)
        losses.append(segmentation_loss(kept_logits, kept_target, 1.0, class_weights))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("class_weights", [None, torch.tensor([0.5, 2.0, 1.0])])
def test_loss_with_void_pixels_equals_the_loss_on_the_valid_pixels_only(class_weights):
    logits, target = logits_and_void_masks()
    with_void = segmentation_loss(logits, target, 1.0, class_weights)
    torch.testing.assert_close(with_void, valid_only_loss(logits, target, class_weights))


def test_cross_entropy_part_matches_pytorch_on_the_valid_pixels():
    logits, target = logits_and_void_masks(1)
    ce_only = segmentation_loss(logits, target, dice_weight=0.0)
    per_image = [F.cross_entropy(logits[i][:, target[i] != V].T, target[i][target[i] != V]) for i in range(2)]
    torch.testing.assert_close(ce_only, (per_image[0] + per_image[1]) / 2)


def test_gradient_is_zero_at_void_pixels_and_not_elsewhere():
    logits, target = logits_and_void_masks(2)
    logits.requires_grad_(True)
    segmentation_loss(logits, target, 1.0).backward()
    void = (target == V)[:, None].expand_as(logits)
    assert logits.grad[void].abs().max() == 0
    assert (logits.grad[~void].abs() > 0).float().mean() > 0.9


def test_an_image_without_valid_pixels_adds_nothing_but_counts_as_an_image():
    logits, target = logits_and_void_masks(3)
    target[1] = V
    both = segmentation_loss(logits, target)
    assert torch.isfinite(both)
    torch.testing.assert_close(both, segmentation_loss(logits[:1], target[:1]) / 2)
    assert soft_dice_loss(logits[1:], target[1:]).item() == pytest.approx(0.0, abs=1e-6)


def test_one_hot_of_a_mask_with_void_is_zero_there():
    target = torch.tensor([[[0, 2], [V, 1]]])
    one_hot = valid_one_hot(target, 3)
    assert one_hot[0, :, 1, 0].tolist() == [0, 0, 0]
    assert one_hot[0, :, 0, 1].tolist() == [0, 0, 1] and one_hot[0, :, 1, 1].tolist() == [0, 1, 0]


@pytest.mark.parametrize("adv_mask", ["soft", "straight_through"])
def test_discriminator_sees_zeros_at_void_pixels_for_truth_and_prediction(tiny_params, adv_mask):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.1, "train.adv_mask": adv_mask})
    state = build_training_state(params, 1, 3)
    seen = []
    state.discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[1].detach().clone()))
    images, masks = batch(2, 16)
    masks[:, :, :5] = V
    unlabelled, _ = batch(2, 16, seed=1)
    train_step(state, images, masks, params.train, unlabelled=unlabelled)
    d_step, g_step = seen  # (real truth + fake prediction) for D; (labelled + unlabelled predictions) for G
    real, fake = d_step.chunk(2)
    void = (masks == V)[:, None].expand_as(real)
    assert real[void].abs().max() == 0 and fake[void].abs().max() == 0
    torch.testing.assert_close(real[~void], F.one_hot(masks.clamp(max=2), 3).permute(0, 3, 1, 2).float()[~void])
    labelled, unlabelled_probs = g_step[:2], g_step[2:]
    assert labelled[void].abs().max() == 0
    if adv_mask == "soft":  # softmax probabilities outside void
        assert (fake[~void] > 0).all() and (labelled[~void] > 0).all()
        assert (unlabelled_probs > 0).all()  # unlabelled images have no masks, so nothing is void there
    else:  # the one-hot of the predicted class outside void, everywhere on unlabelled images
        valid_pixels = ~(masks == V)
        assert torch.equal(fake.sum(1)[valid_pixels], torch.ones(int(valid_pixels.sum())))
        assert set(fake.unique().tolist()) == {0.0, 1.0}
        assert torch.allclose(unlabelled_probs.sum(1), torch.ones(1))


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_leave_void_pixels_out_against_a_hand_computed_confusion_matrix():
    truth = torch.tensor([
        [0, 0, 1, V],
        [1, 1, V, 2],
        [2, 0, V, V],
    ])
    pred = torch.tensor([
        [0, 1, 1, 2],
        [1, 0, 0, 2],
        [2, 0, 1, 0],
    ])
    confusion = confusion_matrix(pred, truth, 3)
    # the 8 annotated pixels, by hand (rows truth, columns prediction):
    #   truth 0 at (0,0) (0,1) (2,1) -> predicted 0, 1, 0
    #   truth 1 at (0,2) (1,0) (1,1) -> predicted 1, 1, 0
    #   truth 2 at (1,3) (2,0)       -> predicted 2, 2
    # the 4 void pixels (predicted 2, 0, 1, 0) are in no cell
    assert confusion.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 2]]
    s = scores(confusion)
    # IoU = TP / (row + column - TP): class 0: 2 / (3 + 3 - 2) = 0.5, class 1: 2 / 4 = 0.5, class 2: 2 / 2 = 1
    assert s["iou"] == pytest.approx([0.5, 0.5, 1.0])
    # Dice = 2 TP / (row + column): 4 / 6, 4 / 6, 4 / 4
    assert s["dice"] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert s["miou"] == pytest.approx(2 / 3)
    assert s["mdice"] == pytest.approx(7 / 9)
    # pixel accuracy: 6 of the 8 annotated pixels are right
    assert s["pixel_accuracy"] == pytest.approx(0.75)


def test_an_edge_between_a_class_and_void_is_not_a_boundary():
    truth = torch.zeros(1, 12, 12, dtype=torch.long)
    truth[:, :, 6:] = V  # left half class 0, right half void
    pred = torch.zeros_like(truth)
    pred[:, :, 6:] = 1  # the prediction changes class exactly where the void starts
    metric = BoundaryF1(2, tolerance=0)
    metric.update(pred, truth)
    assert metric.counts.sum() == 0  # no boundary pixel, predicted or true, in either class


def test_predicted_edges_inside_void_are_not_counted():
    truth = torch.zeros(1, 16, 16, dtype=torch.long)
    truth[:, 2:6, 2:6] = 1
    truth[:, 8:, 8:] = V
    pred = truth.clone()
    pred[:, 8:, 8:] = 0
    pred[:, 10:14, 10:14] = 1  # an object the truth does not annotate
    metric = BoundaryF1(2, tolerance=0)
    metric.update(pred, truth)
    assert metric.scores() == pytest.approx([1.0, 1.0])
    assert metric.counts[1].tolist() == [12, 12, 12, 12]  # the ring of the annotated 4 x 4 square only


# --- evaluation report and overlays ------------------------------------------------------------


def test_overlay_draws_void_pixels_grey():
    image = np.zeros((2, 3, 3), np.uint8)
    image[...] = (200, 40, 10)
    mask = np.array([[0, 1, V], [V, 0, 1]], np.uint8)
    out = overlay(image, mask)
    assert out[0, 2].tolist() == list(VOID_GREY) and out[1, 0].tolist() == list(VOID_GREY)
    assert out[0, 0].tolist() == [200, 40, 10]  # background: the image as it is
    assert out[0, 1].tolist() not in ([200, 40, 10], list(VOID_GREY))  # class 1: tinted


def test_truth_panel_is_grey_at_void_and_prediction_panel_shows_the_prediction():
    image = np.full((4, 4, 1), 90, np.uint8)
    truth = np.zeros((4, 4), np.uint8)
    truth[:, 2:] = V
    pred = np.ones((4, 4), np.uint8)
    strip = np.asarray(comparison_strip(image, truth, pred, scale=1))
    truth_panel, pred_panel = strip[:, 4 + 4 : 8 + 4], strip[:, 16:20]
    assert (truth_panel[:, 2:] == VOID_GREY).all() and (truth_panel[:, :2] == 90).all()
    assert (pred_panel == overlay(image, pred)).all()


def test_evaluation_scores_only_annotated_pixels(tmp_path, tiny_params):
    rng = np.random.default_rng(0)
    for i in range(15):
        mask = rng.integers(0, 2, (20, 24)).astype(np.uint8)
        mask[:, :7] = 255  # 140 of 480 pixels outside the annotated area
        write_pair(tmp_path / "ds", f"e{i:02d}", rng.integers(0, 255, (20, 24), dtype=np.uint8), mask)
    cfg = DataConfig(source=str(tmp_path / "ds"), class_names=["a", "b"], image_size=16, ignore_index=255)
    stats = prepare_dataset(cfg, 0, tmp_path / "prep", False)
    generator, _ = build_networks(tiny_params, 1, 2)
    result = evaluate_full_size(generator, tmp_path / "prep", stats, keep=2, progress=False)
    images = stats.test_images
    assert images > 0 and result.num_images == images
    assert int(result.confusion.sum()) == images * (480 - 140) and result.void_pixels == images * 140
    metrics = write_report(result, stats, tmp_path / "report", num_overlays=2, tolerance=2)
    assert metrics["scored_pixels"] == images * 340 and metrics["void_pixels"] == images * 140
    assert json.loads((tmp_path / "report/metrics.json").read_text())["void_pixels"] == images * 140
    strip = np.asarray(Image.open(tmp_path / "report/overlays/test_000.png"))
    scale = strip.shape[0] // 20
    truth_panel = strip[:, (24 + 4) * scale : (48 + 4) * scale]
    assert (truth_panel[:, : 7 * scale] == VOID_GREY).all()
