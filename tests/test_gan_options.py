"""Model and loss options of the GAN segmenter: product discriminator input, class weights,
adversarial warm-up, the generator's moving average and the semi-supervised step."""

import math

import pytest
import torch
import torch.nn.functional as F

from ganseg.checkpoints import checkpoint_of, restore_checkpoint, weights_to_export
from ganseg.gan.averaging import moving_average
from ganseg.segmenter.losses import (
    class_weight_tensor,
    cross_entropy_per_image,
    realness,
    segmentation_loss,
    self_taught_loss,
    soft_dice_loss,
)
from ganseg.segmenter.networks import build_discriminator
from ganseg.segmenter.training import (
    _self_taught,
    build_training_state,
    train_epoch,
    train_step,
)
from tests.conftest import batch, changed, weights_of


def test_product_input_multiplies_the_image_by_each_class_probability(tiny_params):
    cfg = tiny_params.model.model_copy(update={"disc_input": "product", "spectral_norm": False})
    disc = build_discriminator(cfg, 3, 4)
    assert disc.net[0].in_channels == 12
    seen = {}
    disc.net.register_forward_pre_hook(lambda _, args: seen.update(x=args[0]))
    image, probs = torch.rand(2, 3, 16, 16), torch.rand(2, 4, 16, 16)
    disc(image, probs)
    torch.testing.assert_close(seen["x"][:, 3 * 2 : 3 * 3], image * probs[:, 2:3])  # class 2's copy


def test_inverse_sqrt_weights_by_hand():
    # 1/sqrt of the shares: 10/9, 30/9, 30/9, 90/9, and the rarest present class's 90/9 for the absent one;
    # their mean is 50/9, so the weights are 10/50, 30/50, 30/50, 90/50, 90/50
    weights = class_weight_tensor("inverse_sqrt", [0.81, 0.09, 0.09, 0.01, 0.0])
    torch.testing.assert_close(weights, torch.tensor([0.2, 0.6, 0.6, 1.8, 1.8]))
    assert class_weight_tensor("none", [0.5, 0.5]) is None
    assert class_weight_tensor([1.0, 3.0], []).tolist() == [1.0, 3.0]


def test_class_weights_change_the_loss_only_through_the_weighted_classes():
    # one image of three pixels, truth 0, 1, 1; predicted class-1 probabilities 1/2, 3/4, 1/4
    logits = torch.tensor([[[[0.0, 0.0, 0.0]], [[0.0, math.log(3), -math.log(3)]]]])
    target = torch.tensor([[[0, 1, 1]]])
    # cross-entropy -ln of 1/2, 3/4, 1/4; Dice (2 * overlap + 1) / (sum of probabilities + pixels + 1):
    # class 0 (2 * 1/2 + 1) / (3/2 + 1 + 1) = 4/7, class 1 (2 * 1 + 1) / (3/2 + 2 + 1) = 2/3
    unweighted = math.log(32 / 3) / 3 + 1 - (4 / 7 + 2 / 3) / 2
    only_class_1 = math.log(16 / 3) / 2 + 1 - 2 / 3  # the two class-1 pixels, class 1's Dice
    assert segmentation_loss(logits, target).item() == pytest.approx(unweighted, rel=1e-6)
    assert segmentation_loss(logits, target, 1.0, torch.ones(2)).item() == pytest.approx(unweighted, rel=1e-6)
    class_1 = torch.tensor([0.0, 1.0])
    assert segmentation_loss(logits, target, 1.0, class_1).item() == pytest.approx(only_class_1, rel=1e-6)
    assert soft_dice_loss(logits, target, class_weights=class_1).item() == pytest.approx(1 / 3, rel=1e-6)


def test_self_taught_loss_uses_only_trusted_pixels():
    logits = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
    confidence = torch.zeros(1, 4, 4)
    confidence[0, 0, :2] = 0.9
    loss, used = self_taught_loss(logits, confidence, threshold=0.5)
    expected = F.cross_entropy(logits, logits.argmax(1), reduction="none")[0, 0, :2].mean()
    assert loss.item() == pytest.approx(expected.item()) and used.item() == pytest.approx(2 / 16)
    loss.backward()
    assert logits.grad[0, :, 1:].abs().sum() == 0  # untrusted pixels get no gradient
    nothing, none_used = self_taught_loss(logits, torch.zeros(1, 4, 4), threshold=0.5)
    assert nothing.item() == 0 and none_used.item() == 0


def test_self_taught_loss_is_a_mean_over_images_of_their_trusted_pixels():
    """Image 0 trusts 1 pixel, image 1 trusts 3, image 2 none: (its pixel + mean of 3 + 0) / 3 images."""
    logits = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    confidence = torch.zeros(3, 2, 2)
    confidence[0, 0, 0] = 1.0
    confidence[1].view(-1)[:3] = 1.0
    loss, used = self_taught_loss(logits, confidence, threshold=0.5)
    own = F.cross_entropy(logits, logits.argmax(1), reduction="none")
    expected = (own[0, 0, 0] + own[1].view(-1)[:3].mean() + 0.0) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and used.item() == pytest.approx(4 / 12)


@pytest.mark.parametrize("kind, scores, expected", [
    ("hinge", [-3.0, -1.0, 0.0, 0.5, 1.0, 3.0], [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]),  # targets -1 and +1
    ("lsgan", [-1.0, 0.0, 0.5, 1.0, 2.0], [0.0, 0.0, 0.5, 1.0, 1.0]),  # targets 0 and 1
    ("vanilla", [-2.0, 0.0, 2.0], [1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**-2)]),  # the sigmoid
])
def test_realness_places_the_score_between_the_fake_target_0_and_the_real_target_1(kind, scores, expected):
    torch.testing.assert_close(realness(kind, torch.tensor(scores)), torch.tensor(expected))


@pytest.mark.parametrize("kind, fake_target, real_target", [("hinge", -1.0, 1.0), ("lsgan", 0.0, 1.0),
                                                            ("vanilla", -5.0, 5.0)])
def test_a_patch_scored_at_the_fake_target_is_not_trusted_one_at_the_real_target_is(
    tiny_params, kind, fake_target, real_target
):
    """At the default threshold 0.2, whatever the adversarial loss (the sigmoid of hinge's fake target,
    sigmoid(-1) = 0.27, would have been trusted)."""
    cfg = tiny_params.train.model_copy(update={"adv_loss": kind})
    assert cfg.semi.threshold == 0.2
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    scores = torch.tensor([fake_target, real_target]).view(2, 1, 1, 1).expand(2, 1, 4, 4)
    _, used = _self_taught(logits, scores, cfg)
    assert used.item() == 0.5  # every pixel of the second image, none of the first


def test_a_class_weighted_0_adds_no_loss_even_where_an_image_holds_only_it(tiny_params):
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6), requires_grad=True)
    target = torch.zeros(2, 8, 8, dtype=torch.long)  # image 0 holds only class 0, which weighs 0
    target[1, :4] = 1
    weights = torch.tensor([0.0, 1.0, 1.0])
    loss = segmentation_loss(logits, target, 1.0, weights)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    class_1 = F.cross_entropy(logits[1:], target[1:], reduction="none")[0, :4].mean()
    torch.testing.assert_close(cross_entropy_per_image(logits, target, weights), class_1 / 2)  # image 0 adds 0
    params = tiny_params.with_overrides({"train.class_weights": [0.0, 1.0, 1.0]})
    images = batch()[0]
    step_stats = train_step(build_training_state(params, 1, 3), images, torch.zeros(4, 32, 32, dtype=torch.long),
                            params.train)
    assert all(math.isfinite(value) for value in step_stats.values())


def test_warmup_epochs_leave_the_discriminator_untouched(tiny_params):
    params = tiny_params.with_overrides({"train.adv_warmup_epochs": 1, "train.epochs": 2})
    state = build_training_state(params, 1, 3)
    before = weights_of(state.discriminator)
    epoch_means = train_epoch(state, [batch()], params.train, epoch=1)
    assert "loss_adv" not in epoch_means and not changed(before, state.discriminator)
    epoch_means = train_epoch(state, [batch()], params.train, epoch=2)
    assert "loss_adv" in epoch_means and changed(before, state.discriminator)


def test_ema_is_evaluated_exported_and_restored(tiny_params, tmp_path):
    params = tiny_params.with_overrides({"train.ema_decay": 0.5})
    state = build_training_state(params, 1, 3)
    for seed in range(3):
        train_step(state, *batch(seed=seed), params.train)
    live, average = state.segmenter.state_dict(), state.eval_segmenter.state_dict()
    assert state.eval_segmenter is state.ema.module
    assert any(not torch.equal(live[k], average[k]) for k in live)
    checkpoint = checkpoint_of(state, epoch=1, history=[])
    assert all(torch.equal(weights_to_export(checkpoint, "segmenter")[k], average[k]) for k in average)
    torch.save(checkpoint, tmp_path / "state.pt")
    fresh = build_training_state(params, 1, 3)
    restore_checkpoint(fresh, tmp_path / "state.pt")
    assert all(torch.equal(fresh.eval_segmenter.state_dict()[k], average[k]) for k in average)
    assert int(fresh.ema.n_averaged) == 3


def test_the_moving_average_follows_early_training_and_settles_at_its_decay():
    """A weight that jumps from 0 to 1 after the first update: a plain average with decay 0.99 would still
    hold 0.99**20 = 82 % of the 0 twenty updates later; warmed up, the average is past the jump's midpoint.
    Much later each update moves it by exactly 1 - decay."""
    network = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(network.weight)
    average = moving_average(network, decay=0.99)
    average.update_parameters(network)
    torch.nn.init.ones_(network.weight)
    for _ in range(20):
        average.update_parameters(network)
    assert average.module.weight.item() > 0.5
    for _ in range(2000):
        average.update_parameters(network)
    torch.nn.init.zeros_(network.weight)
    before = average.module.weight.item()
    average.update_parameters(network)
    assert average.module.weight.item() == pytest.approx(before * 0.99)


@pytest.mark.parametrize("threshold, trusted_columns", [(0.05, 32), (0.5, 16), (0.95, 0)])
def test_semi_supervised_step_trains_on_the_unlabelled_pixels_the_discriminator_trusts(
    tiny_params, threshold, trusted_columns
):
    """The hinge discriminator scores the left half of every patch map +0.5 and the right half -0.5:
    realness (s + 1) / 2 = 0.75 and 0.25, blended only across the middle once upsampled to pixels."""
    params = tiny_params.with_overrides({"train.semi.threshold": threshold, "train.semi.lambda_semi": 1.0,
                                         "train.adv_loss": "hinge"})
    state = build_training_state(params, 1, 3)

    def fixed_scores(_, __, scores):
        left = torch.arange(scores.shape[-1]) < scores.shape[-1] // 2
        return scores * 0 + torch.where(left, 0.5, -0.5)  # still attached to the graph, so backward runs

    state.discriminator.register_forward_hook(fixed_scores)
    predicted = []
    state.segmenter.register_forward_hook(lambda _, __, logits: predicted.append(logits.detach()))
    images, masks = batch()
    unlabelled, _ = batch(seed=5)
    step_stats = train_step(state, images, masks, params.train, unlabelled=unlabelled)
    assert step_stats["semi_pixels"] == trusted_columns / 32
    logits = predicted[0][len(images):]
    own_classes = F.cross_entropy(logits, logits.argmax(1), reduction="none")[..., :trusted_columns]
    expected = own_classes.mean().item() if trusted_columns else 0.0
    assert step_stats["loss_semi"] == pytest.approx(expected, rel=1e-5)


def test_supervised_baseline_leaves_unlabelled_images_unused(tiny_params):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.0})
    step_stats = train_step(build_training_state(params, 1, 3), *batch(), params.train, unlabelled=batch(seed=5)[0])
    assert "loss_semi" not in step_stats  # no discriminator, no confidence map


def test_semi_supervised_batches_join_from_the_start_epoch(tiny_params):
    params = tiny_params.with_overrides({"train.semi.start_epoch": 2})
    state = build_training_state(params, 1, 3)
    unlabelled = iter([batch(seed=7)[0]] * 4)
    assert "loss_semi" not in train_epoch(state, [batch()], params.train, epoch=1, unlabelled=unlabelled)
    assert "loss_semi" in train_epoch(state, [batch()], params.train, epoch=2, unlabelled=unlabelled)


def test_class_weights_list_must_match_the_classes(tiny_params):
    from ganseg.config import ParamsError

    with pytest.raises(ParamsError, match="class_weights has 2 values for 3 classes"):
        tiny_params.with_overrides({"train.class_weights": [1.0, 2.0]})


def test_inverse_sqrt_weights_without_frequencies_say_what_is_missing(tiny_params):
    params = tiny_params.with_overrides({"train.class_weights": "inverse_sqrt"})
    with pytest.raises(ValueError, match="inverse_sqrt needs the training class frequencies"):
        build_training_state(params, 1, 3)
