"""Segmenting new images with an exported model: one class-id mask PNG per image.

Image values are mapped to the network's input by the intensity rule recorded in the model card,
exactly as prepare mapped the training images; each image is then segmented at its own size, the
way the model saw its training data (ganseg/segmenter/inference.py).

`FileSegmenter` turns one image file's bytes into its mask PNG; whoever runs it (`ganseg predict`
in one process, Ray Data workers in pipeline/ray/predict.py, a served model) gets the same bytes.
`write_masks` lands the results in a folder, all of them or none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from ganseg.data.sources import (
    DEFAULT_MAX_PIXELS,
    BadFileError,
    read_model_input,
)
from ganseg.devices import inference_device
from ganseg.fileio import atomic_add_files, png_bytes
from ganseg.segmenter.export import load_model
from ganseg.segmenter.inference import segment_image
from ganseg.viz import overlay


@dataclass(frozen=True)
class Segmented:
    """What became of one input file: its mask PNG (and overlay PNG), or why it was skipped."""

    name: str
    mask: bytes = b""
    overlay: bytes = b""
    error: str = ""


class FileSegmenter:
    """An exported model, loaded once on the inference device, segmenting image files' bytes."""

    def __init__(self, model_dir: str | Path, max_image_pixels: int = DEFAULT_MAX_PIXELS, flips: bool = False,
                 overlays: bool = False):
        segmenter, self.card = load_model(model_dir)
        self.segmenter = segmenter.to(inference_device())
        self.max_image_pixels, self.flips, self.overlays = max_image_pixels, flips, overlays

    def segment(self, data: bytes, flips: bool) -> tuple[np.ndarray, np.ndarray]:
        """(the image as the network sees it, its class ids) for one encoded image (PNG, TIFF, JPEG,
        ... bytes); BadFileError says why an input cannot be used."""
        card = self.card
        image, _ = read_model_input(io.BytesIO(data), card.in_channels, card.intensity, self.max_image_pixels,
                                    card.preprocess)
        return image, segment_image(self.segmenter, image, card.image_size, card.fit, flips)

    def __call__(self, name: str, data: bytes) -> Segmented:
        try:
            image, mask = self.segment(data, self.flips)
        except BadFileError as err:
            return Segmented(name, error=err.reason)
        return Segmented(name, png_bytes(mask), png_bytes(overlay(image, mask)) if self.overlays else b"")


def write_masks(results: Iterable[Segmented], output_dir: Path, total: int) -> dict:
    """`<stem>.png` (and `<stem>_overlay.png`) in `output_dir` for each result, with a progress bar
    over `total` files; skipped files are reported. The files land only once every result is in: a
    failure adds nothing there, and other files of the folder stay."""
    failed: dict[str, str] = {}
    with atomic_add_files(output_dir) as staging:
        for result in tqdm(results, total=total, desc="predict", unit="img"):
            if result.error:
                failed[result.name] = result.error
                continue
            stem = Path(result.name).stem
            (staging / f"{stem}.png").write_bytes(result.mask)
            if result.overlay:
                (staging / f"{stem}_overlay.png").write_bytes(result.overlay)
    for name, reason in sorted(failed.items()):
        print(f"skipped {name}: {reason}")
    return {"written": total - len(failed), "failed": failed}

