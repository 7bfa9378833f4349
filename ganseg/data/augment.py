"""Training-time augmentation, applied jointly to image and mask with torchvision.transforms.v2.

Geometric transforms move image and mask together (the mask is resampled with nearest
neighbour, so class ids stay class ids, and void stays void); where they reach past the image
border, the mask is filled with VOID: those pixels were never annotated. Brightness and contrast
touch the image only.
"""

from __future__ import annotations

import functools

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ganseg.config import AugmentConfig
from ganseg.data.void import VOID

FILL = {tv_tensors.Image: 0, tv_tensors.Mask: VOID}  # what geometric transforms put where nothing maps


class RandomRot90(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees: exact, no interpolation, no border."""

    def forward(self, image: tv_tensors.Image, mask: tv_tensors.Mask):
        turns = int(torch.randint(0, 4, ()))
        rotate = lambda t: tv_tensors.wrap(torch.rot90(t, turns, dims=(-2, -1)), like=t)  # noqa: E731
        return rotate(image), rotate(mask)


def build_augmentation(cfg: AugmentConfig, size: int) -> v2.Compose | None:
    if not cfg.enabled:
        return None
    steps: list = []
    if cfg.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(size, scale=(cfg.crop_scale, 1.0), ratio=(0.8, 1.25)))
    if cfg.flips:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if cfg.rot90:
        steps.append(RandomRot90())
    if cfg.affine_degrees > 0:
        steps.append(v2.RandomAffine(
            degrees=cfg.affine_degrees, scale=(0.9, 1.1), interpolation=v2.InterpolationMode.BILINEAR, fill=FILL
        ))
    if cfg.elastic_alpha > 0:
        steps.append(v2.ElasticTransform(alpha=cfg.elastic_alpha, sigma=5.0, fill=FILL))
    if cfg.brightness > 0 or cfg.contrast > 0:
        steps.append(v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast))
    return v2.Compose(steps)


def augment_pair(transform: v2.Compose, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image (C, H, W) and int64 mask (H, W), transformed together."""
    out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)


def pair_transform(cfg: AugmentConfig, size: int):
    """A (image, mask) -> (image, mask) callable for PreparedSplit, or None when augmentation is off."""
    transform = build_augmentation(cfg, size)
    return None if transform is None else functools.partial(augment_pair, transform)
