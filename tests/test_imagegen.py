"""The mask -> image generator's library: label maps, networks, losses and training steps (pure PyTorch)."""

import pytest
import torch

from ganseg.config import ImagegenConfig
from ganseg.data.void import VOID
from ganseg.imagegen import losses
from ganseg.imagegen.networks import SpadeGenerator, one_hot_with_void
from ganseg.imagegen.training import build_state, sample, train_step

SMALL = {"base_channels": 8, "disc_channels": 8, "depth": 2, "noise_dim": 4}


def _batch(n=2, size=16, classes=3):
    torch.manual_seed(0)
    mask = torch.randint(0, classes, (n, size, size))
    mask[:, :2] = VOID
    image = (mask.clamp(max=classes - 1) * 100).to(torch.uint8)[:, None]
    return image, mask


def test_void_pixels_get_a_label_channel_of_their_own():
    mask = torch.tensor([[[0, 1, VOID]]])
    label_map = one_hot_with_void(mask, num_classes=2)
    assert label_map.shape == (1, 3, 1, 3)
    assert label_map[0, :, 0].T.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_spade_draws_different_images_from_one_mask_and_the_same_from_one_seed():
    _, mask = _batch()
    generator = SpadeGenerator(3, 1, base=8, depth=2, noise_dim=4)
    first, again, other = (sample(generator, mask, 3, seed=s) for s in (1, 1, 2))
    assert first.dtype == torch.uint8 and first.shape == (2, 1, 16, 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_pix2pix_ignores_the_seed_it_has_no_noise():
    _, mask = _batch()
    state = build_state(ImagegenConfig(generator="pix2pix", **SMALL), 3, 1)
    assert torch.equal(sample(state.eval_generator, mask, 3, seed=1), sample(state.eval_generator, mask, 3, seed=2))


def test_class_balance_weighs_a_rare_class_up_and_an_absent_one_to_zero():
    mask = torch.tensor([[0] * 9 + [1] + [VOID] * 5])
    weights = losses.class_balance(mask, 3)
    assert weights[1] == pytest.approx(9 * weights[0]) and weights[2] == 0
    assert weights[:2].mean() == pytest.approx(1.0)


def test_oasis_losses_ignore_void_pixels_and_stay_finite_on_an_all_void_batch():
    _, mask = _batch()
    logits = torch.randn(2, 4, 16, 16)
    changed = logits.clone()
    changed[:, :, :2] = 50.0  # only void pixels differ
    assert losses.oasis_generator(logits, mask) == pytest.approx(float(losses.oasis_generator(changed, mask)))
    void = torch.full_like(mask, VOID)
    assert torch.isfinite(losses.oasis_discriminator(logits, void, logits))


@pytest.mark.parametrize("generator, discriminator", [("spade", "patch"), ("spade", "oasis"), ("pix2pix", "patch")])
def test_a_training_step_updates_both_networks_and_logs_finite_losses(generator, discriminator):
    image, mask = _batch()
    cfg = ImagegenConfig(generator=generator, discriminator=discriminator, **SMALL)
    state = build_state(cfg, 3, 1)
    before = [p.detach().clone() for p in (*state.generator.parameters(), *state.discriminator.parameters())]
    logged = train_step(state, image, mask, cfg)
    after = [*state.generator.parameters(), *state.discriminator.parameters()]
    assert all(torch.isfinite(v) for v in logged.values())
    assert ("loss_l1" in logged) == (generator == "pix2pix") and ("loss_fm" in logged) == (discriminator == "patch")
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > len(before) // 2
    assert state.global_step == 1


def test_pix2pix_learns_to_draw_the_image_of_a_mask():
    image, mask = _batch()
    cfg = ImagegenConfig(generator="pix2pix", lr_g=2e-3, ema_decay=0, **SMALL)
    state = build_state(cfg, 3, 1)
    first = train_step(state, image, mask, cfg)["loss_l1"]
    for _ in range(30):
        last = train_step(state, image, mask, cfg)["loss_l1"]
    assert last < 0.5 * first


def test_a_non_finite_discriminator_loss_stops_before_any_weight_changes_with_imagegen_advice():
    from ganseg.errors import NonFiniteLossError

    image, mask = _batch()
    cfg = ImagegenConfig(**SMALL)
    state = build_state(cfg, 3, 1)
    with torch.no_grad():
        next(state.discriminator.parameters()).fill_(float("nan"))
    before = [p.detach().clone() for p in state.generator.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"loss_d is nan at step 1 \(lower imagegen.lr_g or imagegen.lr_d\)"):
        train_step(state, image, mask, cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, state.generator.parameters()))
