"""Generated pairs in the segmenter's batches (train.synthetic): mask deformation, batch mixing,
judge filtering, the loss weighting and joint training of the image generator."""

import pytest
import torch
from torch import nn

from ganseg.config import MaskDeformConfig, Params
from ganseg.data.void import VOID
from ganseg.imagegen.training import build_state, sample
from ganseg.segmenter.training import build_training_state, train_epoch, train_step
from ganseg.synthetic_pairs import GeneratedPairs, deform_masks

CLASSES = 3


def batch(n=4, size=32, seed=0):
    rng = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):  # blocky layouts: a deformation visibly moves them
        masks[i, 4 + i: 16 + i, 6:20] = 1
        masks[i, 20:28, 2 + 3 * i: 12 + 3 * i] = 2
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=rng)
    return images, masks


def params(**synthetic):
    overrides = {"train.lambda_adv": 0.0, "model.base_channels": 8, "imagegen.base_channels": 8,
                 "imagegen.disc_channels": 8}
    return Params().with_overrides(overrides | {f"train.synthetic.{k}": v for k, v in synthetic.items()})


def image_generator(cfg):
    torch.manual_seed(0)
    return build_state(cfg.imagegen, CLASSES, 1).eval_generator


class ConstantSegmenter(nn.Module):
    """Reads every pixel as `label`."""

    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, x):
        logits = torch.zeros(len(x), CLASSES, *x.shape[-2:])
        logits[:, self.label] = 10.0
        return logits


def test_deformed_masks_keep_shape_and_class_ids_but_change_the_layout():
    torch.manual_seed(0)
    _, masks = batch()
    deformed = deform_masks(masks, MaskDeformConfig())
    assert deformed.shape == masks.shape and deformed.dtype == masks.dtype
    assert set(deformed.unique().tolist()) <= {0, 1, 2}
    assert (deformed != masks).float().mean() > 0.05


def test_mixing_alone_pastes_a_rectangle_of_another_mask():
    torch.manual_seed(0)
    masks = torch.stack([torch.full((32, 32), c) for c in range(3)])
    cfg = MaskDeformConfig(affine_degrees=0, elastic_alpha=0, crop_scale=1.0, mix=1.0)
    mixed = deform_masks(masks, cfg)
    for i, out in enumerate(mixed):
        pasted = out != i
        assert pasted.any(), "with mix 1 every mask gets a rectangle of another"
        rows, cols = pasted.nonzero(as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert pasted.sum() == height * width  # one axis-aligned rectangle
        assert out[pasted].unique().numel() == 1 and out[pasted][0] != i


@pytest.mark.parametrize("share, expected", [(0.0, 0), (0.1, 1), (0.5, 4), (1.0, 8)])
def test_the_share_of_a_batch_that_is_generated(share, expected):
    cfg = params(share=share)
    pairs = GeneratedPairs(cfg.train.synthetic, CLASSES, generator=image_generator(cfg))
    assert pairs.count(8) == expected


def test_mix_keeps_the_first_real_pairs_and_draws_the_rest_from_their_own_masks():
    cfg = params(share=0.5, masks="labelled")
    generator = image_generator(cfg)
    pairs = GeneratedPairs(cfg.train.synthetic, CLASSES, generator=generator)
    images, masks = batch()
    torch.manual_seed(1)
    out_images, out_masks, generated, _ = pairs.mix(images, masks, segmenter=None)
    assert generated == 2
    assert torch.equal(out_images[:2], images[:2]) and torch.equal(out_masks, masks)
    assert out_images.dtype == torch.uint8 and not torch.equal(out_images[2:], images[2:])
    torch.manual_seed(1)
    assert torch.equal(out_images[2:], sample(generator, masks[2:], CLASSES))


def test_drop_disagreeing_voids_exactly_the_pixels_the_judge_reads_otherwise():
    cfg = params(share=1.0, masks="labelled", drop_disagreeing=True)
    pairs = GeneratedPairs(cfg.train.synthetic, CLASSES, generator=image_generator(cfg), judge=ConstantSegmenter(1))
    images, masks = batch()
    _, out_masks, _, stats = pairs.mix(images, masks, segmenter=None)
    assert torch.equal(out_masks == 1, masks == 1)
    assert bool((out_masks[masks != 1] == VOID).all())
    assert stats["voided_share"] == pytest.approx((masks != 1).float().mean().item())


def test_drop_disagreeing_without_a_judge_is_refused():
    cfg = params(share=0.5, drop_disagreeing=True)
    with pytest.raises(ValueError, match="judge"):
        GeneratedPairs(cfg.train.synthetic, CLASSES, generator=image_generator(cfg))


@pytest.mark.parametrize("weight", [0.0, 1.0, 3.0])
def test_generated_pairs_weigh_in_the_loss_by_their_count_and_weight(weight):
    from ganseg.segmenter.losses import segmentation_loss

    cfg = params(weight=weight)
    images, masks = batch()
    torch.manual_seed(0)
    state = build_training_state(cfg, 1, CLASSES)
    with torch.no_grad():
        logits = state.segmenter(images.float() / 127.5 - 1)
    real, generated = segmentation_loss(logits[:3], masks[:3]), segmentation_loss(logits[3:], masks[3:])
    stats = train_step(state, images, masks, cfg.train, generated=1)
    assert stats["loss_seg"] == pytest.approx(((3 * real + weight * generated) / 4).item(), rel=1e-5)


def test_joint_training_moves_the_image_generator_by_the_segmenters_loss():
    """Two runs from the same start differ only in joint_lambda: the generators end apart, and the
    joint term is logged."""
    images, masks = batch()
    generators = []
    for joint_lambda in (0.0, 5.0):
        cfg = params(share=0.5, joint=True, joint_lambda=joint_lambda)
        torch.manual_seed(0)
        state = build_training_state(cfg, 1, CLASSES)
        joint = build_state(cfg.imagegen, CLASSES, 1)
        pairs = GeneratedPairs(cfg.train.synthetic, CLASSES, joint=joint, imagegen=cfg.imagegen)
        means = train_epoch(state, [(images, masks)] * 2, cfg.train, epoch=1, synthetic=pairs)
        assert (means["imagegen_loss_joint"] > 0) == (joint_lambda > 0)
        generators.append(torch.cat([p.detach().flatten() for p in joint.generator.parameters()]))
        assert joint.global_step == 2
    assert not torch.allclose(*generators)


def test_generated_pairs_wait_for_their_start_epoch():
    cfg = params(share=1.0, start_epoch=2)
    pairs = GeneratedPairs(cfg.train.synthetic, CLASSES, generator=image_generator(cfg))
    calls = []
    original = pairs.mix
    pairs.mix = lambda *args: calls.append(1) or original(*args)
    state = build_training_state(cfg, 1, CLASSES)
    for epoch in (1, 2):
        train_epoch(state, [batch()], cfg.train, epoch=epoch, synthetic=pairs)
    assert len(calls) == 1
