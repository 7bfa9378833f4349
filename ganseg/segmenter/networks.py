"""The segmenter's networks: the U-Net generator (image -> class logits) and the conditional PatchGAN discriminator."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganseg.config import ModelConfig


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """(3x3 conv -> norm -> ReLU) twice."""

    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=norm == "none"),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=norm == "none"),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net returning per-pixel logits (N, out_channels, H, W); H and W divisible by 2**depth."""

    def __init__(self, in_channels: int, out_channels: int, base: int = 16, depth: int = 3, norm: str = "group"):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_channels, widths[0], norm)])
        self.down.extend(ConvBlock(widths[i], widths[i + 1], norm) for i in range(depth))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                          nn.Conv2d(widths[i + 1], widths[i], 1))
            for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(ConvBlock(2 * widths[i], widths[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: scores each receptive-field patch of an (image, mask) pair.

    The mask arrives as class probabilities (softmax of the generator, or one-hot truth). With
    input "concat" it is stacked with the image along channels; with "product" (Luc et al. 2016)
    the discriminator sees the image multiplied by each class's probability, one copy per class.
    The product does not hide whether a mask is exact 0/1 or soft: a one-hot truth gives copies
    that are exactly the image or exactly zero, a prediction gives scaled ones.
    """

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3, use_spectral_norm: bool = True,
                 input_mode: str = "concat"):
        super().__init__()
        self.input_mode = input_mode
        wrap = spectral_norm if use_spectral_norm else (lambda m: m)
        blocks: list[nn.Module] = []
        channels = in_channels
        for i in range(layers):
            out = width * 2 ** min(i, 3)
            blocks += [wrap(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        blocks.append(wrap(nn.Conv2d(channels, 1, 3, padding=1)))
        self.net = nn.Sequential(*blocks)

    def pair(self, image: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        if self.input_mode == "product":  # (N, C, H, W) x (N, K, H, W) -> (N, K*C, H, W)
            return (mask_probs[:, :, None] * image[:, None]).flatten(1, 2)
        return torch.cat([image, mask_probs], dim=1)

    def forward(self, image: torch.Tensor, mask_probs: torch.Tensor, features: bool = False):
        """Patch scores (N, 1, h, w); with `features`, the activations after each down-sampling
        layer and the scores (the SegAN critic's multi-scale features). Both through forward, with
        every parameter used, so that a DDP wrapper sees each call as it expects."""
        x = self.pair(image, mask_probs)
        if not features:
            return self.net(x)
        found = []
        for layer in self.net:
            x = layer(x)
            if not isinstance(layer, nn.Conv2d):
                found.append(x)
        return found + [x]


def build_generator(cfg: ModelConfig, in_channels: int, num_classes: int) -> UNet:
    return UNet(in_channels, num_classes, cfg.base_channels, cfg.depth, cfg.norm)


def build_discriminator(cfg: ModelConfig, in_channels: int, num_classes: int) -> PatchDiscriminator:
    channels = in_channels * num_classes if cfg.disc_input == "product" else in_channels + num_classes
    return PatchDiscriminator(channels, cfg.disc_channels, cfg.disc_layers, cfg.spectral_norm, cfg.disc_input)
