"""The networks both GANs are built from: the U-Net (the segmenter; pix2pix's generator; OASIS's
discriminator) and the PatchGAN stack (the segmenter's discriminator; each scale of the image
generator's)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def spectral_norm_if(use: bool):
    """Wraps a layer in spectral norm when `use`; else leaves it as it is."""
    return spectral_norm if use else (lambda module: module)


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


class PatchGAN(nn.Module):
    """Scores each receptive-field patch of its input: `layers` stride-2 4x4 convolutions (each
    followed by LeakyReLU), then a 3x3 convolution to one score per patch (N, 1, h, w)."""

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3, use_spectral_norm: bool = True):
        super().__init__()
        wrap = spectral_norm_if(use_spectral_norm)
        blocks: list[nn.Module] = []
        channels = in_channels
        for i in range(layers):
            out = width * 2 ** min(i, 3)
            blocks += [wrap(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        blocks.append(wrap(nn.Conv2d(channels, 1, 3, padding=1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Patch scores; with `features`, the activations after each down-sampling layer, then the
        scores (for feature matching and the SegAN critic). Both through forward, with every
        parameter used, so that a DDP wrapper sees each call as it expects."""
        if not features:
            return self.net(x)
        found = []
        for layer in self.net:
            x = layer(x)
            if not isinstance(layer, nn.Conv2d):
                found.append(x)
        return found + [x]
