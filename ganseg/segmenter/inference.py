"""The segmenter's predictions for images of any size: class ids of a batch, logits and classes of
one image at its own size, and the confusion matrix over a loader.

Every image is segmented at its own size, the way the model saw its training data. A model
trained on tiles (data.fit: tile) slides overlapping windows of the tile size over the image and
averages the logits where windows overlap, so the seams do not show; a model trained on whole
images resized to the tile size (data.fit: resize) sees the image resized the same way, and its
logits are resized back. With `flips`, the logits are averaged over the image and its three mirror
images (test-time augmentation: four passes, slightly better edges).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganseg.data.datasets import to_input
from ganseg.metrics import confusion_matrix

OVERLAP = 0.25  # of the tile side
WINDOWS_PER_BATCH = 8
MIRRORS = ((), (-1,), (-2,), (-2, -1))  # as is, left-right, up-down, both


@torch.no_grad()
def predict_classes(generator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class ids (N, H, W) for uint8 images (N, C, H, W) of the training size."""
    return generator(to_input(images)).argmax(1)


@torch.no_grad()
def confusion_over(generator: nn.Module, loader, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The confusion matrix of `generator`'s classes over every (image, mask) batch of `loader`."""
    generator.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        total += confusion_matrix(predict_classes(generator, images), masks, num_classes)
    return total


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Offsets of `tile`-long windows, `stride` apart, covering 0..length; the last ends flush with it."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def pad_to_tile(x: torch.Tensor, tile: int) -> torch.Tensor:
    """Pad (bottom, right) so that both sides are at least `tile` (reflect where the image allows)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = max(0, tile - height), max(0, tile - width)
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


@torch.no_grad()
def sliding_logits(generator: nn.Module, x: torch.Tensor, tile: int, overlap: float = OVERLAP) -> torch.Tensor:
    """Logits (1, K, H, W) for one input (1, C, H, W) of any size, from overlapping tile x tile windows."""
    height, width = x.shape[-2:]
    x = pad_to_tile(x, tile)
    stride = max(1, round(tile * (1 - overlap)))
    corners = [
        (top, left)
        for top in window_starts(x.shape[-2], tile, stride)
        for left in window_starts(x.shape[-1], tile, stride)
    ]
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, *x.shape[-2:], device=x.device)
    for start in range(0, len(corners), WINDOWS_PER_BATCH):
        batch = corners[start : start + WINDOWS_PER_BATCH]
        logits = generator(torch.cat([x[..., t : t + tile, l : l + tile] for t, l in batch]))
        if total is None:
            total = x.new_zeros(1, logits.shape[1], *x.shape[-2:])
        for window, (t, l) in zip(logits, batch):
            total[0, :, t : t + tile, l : l + tile] += window
            count[..., t : t + tile, l : l + tile] += 1
    return (total / count)[..., :height, :width]


@torch.no_grad()
def resized_logits(generator: nn.Module, x: torch.Tensor, tile: int) -> torch.Tensor:
    """Logits (1, K, H, W) for one input (1, C, H, W): through the network at tile x tile, then resized back."""
    small = F.interpolate(x, size=(tile, tile), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(generator(small), size=x.shape[-2:], mode="bilinear", align_corners=False)


def image_logits(generator: nn.Module, x: torch.Tensor, tile: int, fit: str = "tile", flips: bool = False) -> torch.Tensor:
    """Logits (1, K, H, W) for one input (1, C, H, W) of any size, the way the model was trained."""
    def once(view: torch.Tensor) -> torch.Tensor:
        return resized_logits(generator, view, tile) if fit == "resize" else sliding_logits(generator, view, tile)

    if not flips:
        return once(x)
    return sum(once(x.flip(dims)).flip(dims) for dims in MIRRORS) / len(MIRRORS)


def segment_image(
    generator: nn.Module, image: np.ndarray, tile: int, fit: str = "tile", flips: bool = False
) -> np.ndarray:
    """Class ids (H, W) for one (H, W, C) uint8 image of any size."""
    x = to_input(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None])
    x = x.to(next(generator.parameters()).device)
    return image_logits(generator, x, tile, fit, flips)[0].argmax(0).cpu().numpy().astype(np.uint8)
