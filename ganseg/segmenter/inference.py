"""The segmenter's predictions for images of any size: class ids of a batch, logits and classes of
one image at its own size, and the confusion matrix over a loader.

Every image is segmented at its own size, the way the model saw its training data. A model
trained on tiles (data.fit: tile) slides overlapping windows of the tile size over the image and
averages the logits where windows overlap, so the seams do not show; a model trained on whole
images resized to the tile size (data.fit: resize) sees the image resized the same way, and its
logits are resized back. With `flips`, the logits are averaged over each window (or the resized
image) and its three mirror images (test-time augmentation: four passes, slightly better edges).

Images come out in row strips (`logit_strips`), so that predicting and evaluating a large image
hold the logits of one row of windows at a time, not of the whole image.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganseg.data.datasets import to_input
from ganseg.metrics import confusion_matrix

OVERLAP = 0.25  # of the tile side
WINDOWS_PER_BATCH = 16
MIRRORS = ((), (-1,), (-2,), (-2, -1))  # as is, left-right, up-down, both


@torch.no_grad()
def predict_classes(segmenter: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class ids (N, H, W) for uint8 images (N, C, H, W) of the training size."""
    return segmenter(to_input(images)).argmax(1)


@torch.no_grad()
def confusion_over(segmenter: nn.Module, loader, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The confusion matrix of `segmenter`'s classes over every (image, mask) batch of `loader`."""
    segmenter.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        total += confusion_matrix(predict_classes(segmenter, images), masks, num_classes)
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
def sliding_strips(segmenter: nn.Module, x: torch.Tensor, tile: int, flips: bool = False, overlap: float = OVERLAP,
                   per_batch: int = WINDOWS_PER_BATCH) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, logits (K, rows, W)) of consecutive row strips covering one input (1, C, H, W) of
    any size, from overlapping tile x tile windows (each with its mirror images, with `flips`).

    Windows go row by row, `per_batch` at a time. A strip is handed out as soon as no later window
    touches it, so the logits held at any time cover one window row (K x tile x W floats), never
    the whole image; `x` may stay uint8 (converted one batch of windows at a time).
    """
    height, width = x.shape[-2:]
    if height < tile or width < tile:
        x = pad_to_tile(_as_input(x), tile)
    stride = max(1, round(tile * (1 - overlap)))
    tops, lefts = window_starts(x.shape[-2], tile, stride), window_starts(x.shape[-1], tile, stride)
    columns = torch.zeros(x.shape[-1], device=x.device)  # windows over each column in one window row
    for left in lefts:
        columns[left : left + tile] += 1
    band: torch.Tensor | None = None  # logits summed over the window rows that cover rows top..top+tile
    rows = torch.zeros(tile, 1, device=x.device)  # window rows summed into each row of the band
    for i, top in enumerate(tops):
        row = _window_row(segmenter, x[..., top : top + tile, :], lefts, tile, flips, per_batch)
        band = row if band is None else band + row
        rows += 1
        done = (tops[i + 1] if i + 1 < len(tops) else x.shape[-2]) - top  # rows no later window reaches
        if top < height:
            yield top, (band[:, :done] / (rows[:done] * columns))[:, : height - top, :width]
        band = torch.cat([band[:, done:], band.new_zeros(band.shape[0], done, band.shape[2])], 1)
        rows = torch.cat([rows[done:], rows.new_zeros(done, 1)])


def _window_row(segmenter: nn.Module, strip: torch.Tensor, lefts: list[int], tile: int, flips: bool,
                per_batch: int) -> torch.Tensor:
    """Logits (K, tile, W) of one row of windows, summed where they overlap."""
    total: torch.Tensor | None = None
    for start in range(0, len(lefts), per_batch):
        batch = lefts[start : start + per_batch]
        windows = _as_input(torch.cat([strip[..., left : left + tile] for left in batch]))
        logits = _mirrored(segmenter, windows) if flips else segmenter(windows)
        if total is None:
            total = logits.new_zeros(logits.shape[1], tile, strip.shape[-1])
        for window, left in zip(logits, batch):
            total[:, :, left : left + tile] += window
    return total


def _mirrored(segmenter: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of `x` averaged over `x` and its three mirror images, each flipped back."""
    total = segmenter(x)
    for dims in MIRRORS[1:]:  # one pass each: a batch four times larger runs slower per window on a CPU
        total += segmenter(x.flip(dims)).flip(dims)
    return total / len(MIRRORS)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    return to_input(x) if x.dtype == torch.uint8 else x


@torch.no_grad()
def resized_logits(segmenter: nn.Module, x: torch.Tensor, tile: int, flips: bool = False) -> torch.Tensor:
    """Logits (1, K, H, W) for one input (1, C, H, W): through the network at tile x tile, then resized back."""
    small = F.interpolate(_as_input(x), size=(tile, tile), mode="bilinear", antialias=True, align_corners=False)
    logits = _mirrored(segmenter, small) if flips else segmenter(small)
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def logit_strips(segmenter: nn.Module, x: torch.Tensor, tile: int, fit: str = "tile",
                 flips: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, logits (K, rows, W)) of row strips covering one input (1, C, H, W) of any size
    (uint8 or already the network's input), segmented the way the model was trained: sliding
    windows for data.fit tile (in strips, in bounded memory), one resized pass for data.fit resize
    (one strip: the model sees the whole image at tile size anyway)."""
    if fit == "resize":
        yield 0, resized_logits(segmenter, x, tile, flips)[0]
    else:
        yield from sliding_strips(segmenter, x, tile, flips)


def image_logits(segmenter: nn.Module, x: torch.Tensor, tile: int, fit: str = "tile",
                 flips: bool = False) -> torch.Tensor:
    """Logits (1, K, H, W) for one input (1, C, H, W) of any size, the way the model was trained
    (the strips of `logit_strips`, joined: for small images and tests; large images stream)."""
    return torch.cat([logits for _, logits in logit_strips(segmenter, x, tile, fit, flips)], 1)[None]


def segment_image(
    segmenter: nn.Module, image: np.ndarray, tile: int, fit: str = "tile", flips: bool = False
) -> np.ndarray:
    """Class ids (H, W) for one (H, W, C) uint8 image of any size, strip by strip."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    x = x.to(next(segmenter.parameters()).device)
    classes = np.empty(image.shape[:2], np.uint8)
    for top, logits in logit_strips(segmenter, x, tile, fit, flips):
        classes[top : top + logits.shape[1]] = logits.argmax(0).cpu().numpy()
    return classes
