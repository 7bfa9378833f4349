"""Segment a folder of new images with an exported model: one class-id mask PNG per image.

Every image is segmented at its own size, the way the model saw its training data. A model
trained on tiles (data.fit: tile) slides overlapping windows of the tile size over the image and
averages the logits where windows overlap, so the seams do not show; a model trained on whole
images resized to the tile size (data.fit: resize) sees the image resized the same way, and its
logits are resized back. Image values are mapped to the network's input by the intensity rule
recorded in the model card, exactly as prepare mapped the training images. With `flips`, the
logits are averaged over the image and its three mirror images (test-time augmentation: four
passes, slightly better edges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ganseg.data.datasets import to_input
from ganseg.data.sources import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, BadFileError, read_model_input
from ganseg.engine import load_model
from ganseg.fileio import atomic_add_files
from ganseg.viz import overlay

OVERLAP = 0.25  # of the tile side
WINDOWS_PER_BATCH = 8
MIRRORS = ((), (-1,), (-2,), (-2, -1))  # as is, left-right, up-down, both


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


def predict_folder(
    model_dir: str | Path,
    input_dir: Path,
    output_dir: Path,
    overlays: bool = False,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    flips: bool = False,
) -> dict:
    """Masks land in output_dir only once every image is done: a failure adds nothing there."""
    generator, card = load_model(model_dir)
    files = _image_files(Path(input_dir))
    failed: dict[str, str] = {}
    with atomic_add_files(output_dir) as staging:
        for path in tqdm(files, desc="predict", unit="img"):
            try:
                image, _ = read_model_input(path, card.in_channels, card.intensity, max_image_pixels)
            except BadFileError as err:
                failed[path.name] = err.reason
                continue
            mask = segment_image(generator, image, card.image_size, card.fit, flips)
            Image.fromarray(mask).save(staging / f"{path.stem}.png")
            if overlays:
                Image.fromarray(overlay(image, mask)).save(staging / f"{path.stem}_overlay.png")
    for name, reason in failed.items():
        print(f"skipped {name}: {reason}")
    return {"written": len(files) - len(failed), "failed": failed}


def _image_files(input_dir: Path) -> list[Path]:
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir} is not a folder")
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{input_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files
