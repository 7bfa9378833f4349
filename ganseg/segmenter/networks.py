"""The segmenter's networks: the U-Net (image -> class logits) and the conditional PatchGAN discriminator."""

from __future__ import annotations

import torch

from ganseg.config import ModelConfig
from ganseg.gan.networks import ConvBlock, PatchGAN, UNet, make_norm  # noqa: F401

# ConvBlock, UNet and make_norm are named here too: models registered in MLflow by older code were
# pickled with this module as their classes' home.


class PatchDiscriminator(PatchGAN):
    """Conditional PatchGAN: scores each receptive-field patch of an (image, mask) pair.

    The mask arrives as class probabilities (softmax of the segmenter, or one-hot truth). With
    input "concat" it is stacked with the image along channels; with "product" (Luc et al. 2016)
    the discriminator sees the image multiplied by each class's probability, one copy per class.
    The product does not hide whether a mask is exact 0/1 or soft: a one-hot truth gives copies
    that are exactly the image or exactly zero, a prediction gives scaled ones.
    """

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3, use_spectral_norm: bool = True,
                 input_mode: str = "concat"):
        super().__init__(in_channels, width, layers, use_spectral_norm)
        self.input_mode = input_mode

    def pair(self, image: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        if self.input_mode == "product":  # (N, C, H, W) x (N, K, H, W) -> (N, K*C, H, W)
            return (mask_probs[:, :, None] * image[:, None]).flatten(1, 2)
        return torch.cat([image, mask_probs], dim=1)

    def forward(self, image: torch.Tensor, mask_probs: torch.Tensor, features: bool = False):
        return super().forward(self.pair(image, mask_probs), features)


def build_segmenter(cfg: ModelConfig, in_channels: int, num_classes: int) -> UNet:
    return UNet(in_channels, num_classes, cfg.base_channels, cfg.depth, cfg.norm)


def build_discriminator(cfg: ModelConfig, in_channels: int, num_classes: int) -> PatchDiscriminator:
    channels = in_channels * num_classes if cfg.disc_input == "product" else in_channels + num_classes
    return PatchDiscriminator(channels, cfg.disc_channels, cfg.disc_layers, cfg.spectral_norm, cfg.disc_input)
