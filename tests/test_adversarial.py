"""What the discriminator sees (true and predicted masks, instance noise) and the SegAN feature critic."""

import pytest
import torch

from ganseg.config import ParamsError, validate_params
from ganseg.data.void import VOID
from ganseg.segmenter.adversarial import (
    feature_distance,
    instance_noise_std,
    predicted_mask,
    real_mask,
)
from ganseg.segmenter.networks import build_discriminator
from ganseg.segmenter.training import build_training_state, train_step
from tests.conftest import batch, changed, weights_of


def _logits(seed=0):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed), requires_grad=True)


def test_soft_predictions_give_themselves_away_by_value_and_discrete_ones_do_not():
    _, masks = batch(2, 8)
    logits = _logits()
    real = real_mask(masks, 3, noise=0.0)
    # the largest class value of a pixel: exactly 1 in a true mask, below 1 in a softmax
    assert (real.amax(1) == 1).all()
    assert (predicted_mask(logits, "soft").amax(1) < 1).all()
    for how in ("straight_through", "gumbel"):
        hard = predicted_mask(logits, how).detach()
        assert set(hard.unique().tolist()) == {0.0, 1.0} and (hard.sum(1) == 1).all()


def test_noisy_true_masks_are_soft_distributions_and_zero_at_void():
    _, masks = batch(2, 8, void=True)
    torch.manual_seed(0)
    real = real_mask(masks, 3, noise=0.3)
    valid = masks != VOID
    torch.testing.assert_close(real.sum(1)[valid], torch.ones(int(valid.sum())))
    assert (real.amax(1)[valid] < 1).all() and (real.amin(1)[valid] > 0).all()
    assert (real.argmax(1)[valid] == masks[valid]).all()  # noise below 1/2 never changes the class
    assert (real.permute(1, 0, 2, 3)[:, ~valid] == 0).all()


def test_straight_through_passes_the_softmax_gradient():
    logits = _logits()
    weights = torch.randn(2, 3, 8, 8)
    (predicted_mask(logits, "straight_through") * weights).sum().backward()
    through = logits.grad.clone()
    logits.grad = None
    (predicted_mask(logits, "soft") * weights).sum().backward()
    torch.testing.assert_close(through, logits.grad)


def test_instance_noise_falls_linearly_over_the_adversarial_epochs():
    # warm-up 2 of 6 epochs: adversarial epochs 3, 4, 5, 6
    stds = [instance_noise_std(0.3, epoch, 2, 6) for epoch in (3, 4, 5, 6)]
    assert stds == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert instance_noise_std(0.3, None, 2, 6) == 0.3
    assert instance_noise_std(0.0, 4, 2, 6) == 0.0


def test_critic_features_cover_every_layer_and_use_every_parameter(tiny_params):
    disc = build_discriminator(tiny_params.model, 1, 3)
    image, probs = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    features = disc(image, probs, features=True)
    assert len(features) == tiny_params.model.disc_layers + 1
    disc.eval()  # spectral norm's power iteration runs on every training-mode forward
    torch.testing.assert_close(disc(image, probs, features=True)[-1], disc(image, probs))  # the last: scores
    disc.train()
    feature_distance(features, disc(image, probs.flip(0), features=True)).backward()
    assert all(p.grad is not None for p in disc.parameters())  # used: what DDP needs
    assert all(p.grad.abs().sum() > 0 for name, p in disc.named_parameters() if "bias" not in name)


def test_feature_distance_is_zero_for_the_same_pair_and_grows_with_the_difference():
    a = [torch.ones(2, 4, 4, 4), torch.zeros(2, 8, 2, 2)]
    assert feature_distance(a, a).item() == 0
    b = [a[0] + 1, a[1] + 3]
    assert feature_distance(a, b).item() == pytest.approx(2.0)  # layer means 1 and 3


@pytest.mark.parametrize(
    "options",
    [
        {"adv_mask": "straight_through"},
        {"adv_mask": "gumbel", "real_noise": 0.2},
        {"instance_noise": 0.1},
        {"adv_loss": "segan"},
        {"adv_loss": "segan", "adv_mask": "straight_through", "instance_noise": 0.1},
    ],
)
def test_every_remedy_trains_both_networks(tiny_params, options):
    params = tiny_params.model_copy(update={"train": tiny_params.train.model_copy(update=options)})
    state = build_training_state(params, 1, 3)
    generator_before, discriminator_before = weights_of(state.segmenter), weights_of(state.discriminator)
    images, masks = batch(4, 32, void=True)
    stats = train_step(state, images, masks, params.train)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert changed(generator_before, state.segmenter) and changed(discriminator_before, state.discriminator)
    if options.get("adv_loss") == "segan":
        assert stats["loss_d"] < 0 < stats["loss_adv"]  # the critic maximises the distance the segmenter pays


def test_segan_refuses_the_semi_supervised_mode(tiny_params):
    raw = tiny_params.model_dump()
    raw["train"] |= {"adv_loss": "segan", "semi": raw["train"]["semi"] | {"label_fraction": 0.5}}
    with pytest.raises(ParamsError, match="scores patches"):
        validate_params(raw)
