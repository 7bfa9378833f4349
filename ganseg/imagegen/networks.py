"""The image generator's networks: mask (+ noise) -> image, and the discriminators that judge images.

- `SpadeGenerator`: spatially-adaptive normalisation (Park et al. 2019) with noise joined to the
  label map at every layer (3D noise, as in OASIS, Schönfeld et al. 2021), so one mask gives many
  images.
- `pix2pix`: the U-Net run the other way (label map -> image), no noise (Isola et al.).
- `MultiScalePatchDiscriminator`: PatchGANs on the (image, mask) pair at full and halved scales,
  returning every layer's activations for feature matching.
- `OasisDiscriminator`: a U-Net segmenter of the image alone into the N classes + 1 "fake".

Every generator takes the label map as one-hot over the classes plus one channel for void pixels
(`one_hot_with_void`), so unannotated regions (DRIVE's dark border) are drawn as what they are.
Images are floats in [-1, 1] (`ganseg.data.datasets.to_input`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganseg.data.void import VOID
from ganseg.gan.networks import PatchGAN, UNet, spectral_norm_if


def one_hot_with_void(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) class ids with VOID -> (N, num_classes + 1, H, W) floats; the last channel marks void."""
    ids = torch.where(mask == VOID, torch.full_like(mask, num_classes), mask).long()
    return F.one_hot(ids, num_classes + 1).permute(0, 3, 1, 2).float()


class Spade(nn.Module):
    """Normalise x without learnt affine parameters, then scale and shift it per pixel by what a small
    conv net reads from the condition (label map + noise) resized to x."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels), channels, affine=False)  # batch-independent: exact under DDP
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        hidden = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(hidden)) + self.beta(hidden)


class SpadeResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_channels: int, use_sn: bool):
        super().__init__()
        sn = spectral_norm_if(use_sn)
        middle = min(in_ch, out_ch)
        self.norm_0, self.conv_0 = Spade(in_ch, cond_channels), sn(nn.Conv2d(in_ch, middle, 3, padding=1))
        self.norm_1, self.conv_1 = Spade(middle, cond_channels), sn(nn.Conv2d(middle, out_ch, 3, padding=1))
        self.learned_skip = in_ch != out_ch
        if self.learned_skip:
            self.norm_s, self.conv_s = Spade(in_ch, cond_channels), sn(nn.Conv2d(in_ch, out_ch, 1, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_skip else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return skip + dx


class SpadeGenerator(nn.Module):
    """Label map + noise -> image. Starts from the condition at 1/2**depth of the size and doubles it
    `depth` times through SPADE residual blocks; the noise (noise_dim channels, one vector per image
    spread over every pixel) joins the label map at every block."""

    def __init__(self, num_classes: int, out_channels: int, base: int = 32, depth: int = 3, noise_dim: int = 16,
                 use_sn: bool = True):
        super().__init__()
        self.noise_dim = noise_dim
        cond = num_classes + 1 + noise_dim
        widths = [base * 2 ** min(i, 3) for i in reversed(range(depth + 1))]  # deepest first
        self.stem = nn.Conv2d(cond, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(SpadeResBlock(widths[i], widths[i + 1], cond, use_sn) for i in range(depth))
        self.last = SpadeResBlock(widths[-1], widths[-1], cond, use_sn)
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        self.depth = depth

    def forward(self, label_map: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        n, _, h, w = label_map.shape
        if noise is None:
            noise = torch.randn(n, self.noise_dim, device=label_map.device, dtype=label_map.dtype)
        cond = torch.cat([label_map, noise[:, :, None, None].expand(-1, -1, h, w)], dim=1)
        # the condition at each block's size, resized once for all the SPADEs of that size
        at_size = {(h, w): cond} | {(h >> k, w >> k): F.interpolate(cond, size=(h >> k, w >> k), mode="nearest")
                                    for k in range(1, self.depth + 1)}
        x = self.stem(at_size[h >> self.depth, w >> self.depth])
        for block in self.blocks:
            x = F.interpolate(block(x, at_size[tuple(x.shape[-2:])]), scale_factor=2, mode="nearest")
        x = self.last(x, cond)
        return torch.tanh(self.head(F.leaky_relu(x, 0.2)))


class Pix2PixGenerator(nn.Module):
    """The U-Net from label map to image with a tanh output; deterministic: it has no noise input."""

    noise_dim = 0

    def __init__(self, num_classes: int, out_channels: int, base: int = 32, depth: int = 3):
        super().__init__()
        self.unet = UNet(num_classes + 1, out_channels, base, depth, "instance")

    def forward(self, label_map: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.unet(label_map))


class MultiScalePatchDiscriminator(nn.Module):
    """PatchGANs on image ⊕ label map at full size, half size, ... (pix2pixHD / SPADE).
    Returns, per scale, the list of activations with the patch scores last."""

    def __init__(self, image_channels: int, num_classes: int, width: int = 32, layers: int = 3, scales: int = 2,
                 use_sn: bool = True):
        super().__init__()
        channels = image_channels + num_classes + 1
        self.critics = nn.ModuleList(PatchGAN(channels, width, layers, use_sn) for _ in range(scales))

    def forward(self, image: torch.Tensor, label_map: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([image, label_map], dim=1)
        outputs = []
        for i, critic in enumerate(self.critics):
            outputs.append(critic(x if i == 0 else F.avg_pool2d(x, 2 ** i, ceil_mode=True), features=True))
        return outputs


class OasisDiscriminator(nn.Module):
    """A segmenter of the image alone into num_classes + 1 classes: the real classes, and class
    num_classes for "generated" (Schönfeld et al. 2021). Logits (N, num_classes + 1, H, W)."""

    def __init__(self, image_channels: int, num_classes: int, base: int = 32, depth: int = 3):
        super().__init__()
        self.fake_class = num_classes
        self.unet = UNet(image_channels, num_classes + 1, base, depth, "group")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet(image)
