"""Segment a folder of new images with an exported model: one class-id mask PNG per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ganseg.data import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, BadFileError, read_image, to_input
from ganseg.engine import load_model
from ganseg.fileio import atomic_add_files
from ganseg.viz import overlay


@torch.no_grad()
def segment_image(generator: nn.Module, image: np.ndarray, multiple: int) -> np.ndarray:
    """Class ids (H, W) for one (H, W, C) uint8 image of any size (reflect-padded to `multiple`)."""
    height, width = image.shape[:2]
    x = to_input(torch.from_numpy(image).permute(2, 0, 1)[None])
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return generator(x)[0, :, :height, :width].argmax(0).numpy().astype(np.uint8)


def predict_folder(
    model_dir: str | Path,
    input_dir: Path,
    output_dir: Path,
    overlays: bool = False,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Masks land in output_dir only once every image is done: a failure adds nothing there."""
    generator, card = load_model(model_dir)
    multiple = 2 ** card["model"]["depth"]
    files = _image_files(Path(input_dir))
    failed: dict[str, str] = {}
    with atomic_add_files(output_dir) as staging:
        for path in tqdm(files, desc="predict", unit="img"):
            try:
                image = read_image(path, card["in_channels"], max_image_pixels)
            except BadFileError as err:
                failed[path.name] = err.reason
                continue
            mask = segment_image(generator, image, multiple)
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
