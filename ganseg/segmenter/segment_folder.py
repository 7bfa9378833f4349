"""Segmenting a folder of new images with an exported model: one class-id mask PNG per image.

Image values are mapped to the network's input by the intensity rule recorded in the model card,
exactly as prepare mapped the training images; each image is then segmented at its own size, the
way the model saw its training data (ganseg/segmenter/inference.py).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from torch import nn
from tqdm import tqdm

from ganseg.contracts import ModelCard
from ganseg.data.sources import (
    DEFAULT_MAX_PIXELS,
    BadFileError,
    image_files,
    read_model_input,
)
from ganseg.fileio import atomic_add_files, png_bytes
from ganseg.segmenter.export import load_model
from ganseg.segmenter.inference import segment_image
from ganseg.viz import overlay


def segment_folder(
    model_dir: str | Path,
    input_dir: Path,
    output_dir: Path,
    overlays: bool = False,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    flips: bool = False,
) -> dict:
    """One mask PNG per image of `input_dir` (and an overlay with `overlays`); unreadable images are
    reported and skipped. The masks land in `output_dir` only once every image is done: a failure
    adds nothing there."""
    segmenter, card = load_model(model_dir)
    files = image_files(Path(input_dir))
    failed: dict[str, str] = {}
    with atomic_add_files(output_dir) as staging:
        for path in tqdm(files, desc="predict", unit="img"):
            try:
                image, _ = read_model_input(path, card.in_channels, card.intensity, max_image_pixels)
            except BadFileError as err:
                failed[path.name] = err.reason
                continue
            mask = segment_image(segmenter, image, card.image_size, card.fit, flips)
            (staging / f"{path.stem}.png").write_bytes(png_bytes(mask))
            if overlays:
                Image.fromarray(overlay(image, mask)).save(staging / f"{path.stem}_overlay.png")
    for name, reason in failed.items():
        print(f"skipped {name}: {reason}")
    return {"written": len(files) - len(failed), "failed": failed}


def segment_encoded(segmenter: nn.Module, card: ModelCard, data: bytes, max_image_pixels: int = DEFAULT_MAX_PIXELS,
                    flips: bool = False) -> bytes:
    """The mask PNG of one encoded image (PNG, TIFF, JPEG, ... bytes), byte for byte the file that
    `segment_folder` writes for that image file; BadFileError says why an input cannot be used."""
    image, _ = read_model_input(io.BytesIO(data), card.in_channels, card.intensity, max_image_pixels)
    return png_bytes(segment_image(segmenter, image, card.image_size, card.fit, flips))
