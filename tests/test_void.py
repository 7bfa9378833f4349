"""Void (unannotated) pixels, data.ignore_index: decoding, losses, discriminator input, metrics, overlays."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganseg.config import DataConfig, SplitConfig
from ganseg.data import DataError, mask_to_ids, prepare_dataset
from ganseg.engine import build_networks, build_optimizers, train_step
from ganseg.evaluation import summarise
from ganseg.losses import segmentation_loss, soft_dice_loss, valid_one_hot
from ganseg.void import VOID
from tests.conftest import write_pair

V = VOID


def data_config(**extra) -> DataConfig:
    return DataConfig(**{"class_names": ["a", "b", "c"], "ignore_index": 255} | extra)


# --- configuration -----------------------------------------------------------------------------


def test_ignore_index_must_not_be_a_class_id():
    with pytest.raises(ValueError, match="ignore_index 2 is a class id"):
        data_config(ignore_index=2)


def test_binary_masks_cannot_use_their_foreground_value_as_void():
    with pytest.raises(ValueError, match="ignore_index 255 is class 1 of binary masks"):
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
    assert stats["class_frequency"]["train"] == pytest.approx([0.75, 0.25])
    assert stats["void_fraction"]["train"] == pytest.approx(0.6)
    masks = np.load(tmp_path / "out/train_masks.npy")
    assert set(np.unique(masks)) == {0, 1, V}
    # the trivial predictor outputs class 0, the majority of annotated pixels, not "void"
    confusion = torch.tensor([[30, 0], [10, 0]])
    assert summarise(confusion, ["a", "b"], stats["class_frequency"]["train"])["majority_baseline"]["pixel_accuracy"] == 0.75


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


def test_discriminator_sees_zeros_at_void_pixels_for_truth_and_prediction(tiny_params):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.1})
    generator, discriminator = build_networks(params, 1, 3)
    parts = build_optimizers(generator, discriminator, params.train)
    seen = []
    discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[1].detach().clone()))
    images = torch.randint(0, 255, (2, 1, 16, 16), dtype=torch.uint8)
    masks = torch.randint(0, 3, (2, 16, 16))
    masks[:, :, :5] = V
    unlabelled = torch.randint(0, 255, (2, 1, 16, 16), dtype=torch.uint8)
    train_step(parts, images, masks, params.train, unlabelled=unlabelled)
    d_step, g_step = seen  # (real truth + fake prediction) for D; (labelled + unlabelled predictions) for G
    real, fake = d_step.chunk(2)
    void = (masks == V)[:, None].expand_as(real)
    assert real[void].abs().max() == 0 and fake[void].abs().max() == 0
    torch.testing.assert_close(real[~void], F.one_hot(masks.clamp(max=2), 3).permute(0, 3, 1, 2).float()[~void])
    assert (fake[~void] > 0).all()  # softmax probabilities outside void
    labelled, unlabelled_probs = g_step[:2], g_step[2:]
    assert labelled[void].abs().max() == 0 and (labelled[~void] > 0).all()
    assert (unlabelled_probs > 0).all()  # unlabelled images have no masks, so nothing is void there

