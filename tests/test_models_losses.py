import pytest
import torch

from ganseg.config import ModelConfig
from ganseg.segmenter.losses import (
    discriminator_loss,
    segmenter_adversarial_loss,
    soft_dice_loss,
)
from ganseg.segmenter.networks import UNet, build_discriminator, build_segmenter


@pytest.mark.parametrize("depth,norm", [(1, "batch"), (2, "instance"), (3, "group"), (4, "none")])
def test_unet_keeps_spatial_size(depth, norm):
    net = UNet(in_channels=3, out_channels=5, base=4, depth=depth, norm=norm)
    out = net(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 5, 32, 48)


def test_discriminator_scores_patches_and_uses_spectral_norm():
    cfg = ModelConfig(disc_channels=8, disc_layers=3)
    disc = build_discriminator(cfg, in_channels=1, num_classes=3)
    scores = disc(torch.randn(2, 1, 64, 64), torch.rand(2, 3, 64, 64))
    assert scores.shape == (2, 1, 8, 8)
    assert any("parametrizations.weight" in name for name, _ in disc.named_parameters())
    plain = build_discriminator(cfg.model_copy(update={"spectral_norm": False}), 1, 3)
    assert not any("parametrizations" in name for name, _ in plain.named_parameters())


def test_generator_from_config():
    gen = build_segmenter(ModelConfig(base_channels=8, depth=2), in_channels=1, num_classes=2)
    assert gen(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_dice_loss_near_zero_for_confident_correct_and_near_one_for_wrong():
    target = torch.tensor([[[0, 1], [1, 0]]])
    right = torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(right, target).item() < 0.1
    assert soft_dice_loss(-right, target).item() > 0.7


def test_hinge_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25 ; relu(1 + fake) = [0, 1] -> 0.5
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.75)
    assert segmenter_adversarial_loss("hinge", fake).item() == pytest.approx(1.0)


def test_lsgan_and_vanilla_by_hand():
    real, fake = torch.tensor([1.0]), torch.tensor([0.0])
    assert discriminator_loss("lsgan", real, fake).item() == pytest.approx(0.0)
    assert segmenter_adversarial_loss("lsgan", fake).item() == pytest.approx(1.0)
    log2 = torch.log(torch.tensor(2.0)).item()
    assert discriminator_loss("vanilla", torch.zeros(1), torch.zeros(1)).item() == pytest.approx(2 * log2)
    assert segmenter_adversarial_loss("vanilla", torch.zeros(1)).item() == pytest.approx(log2)
