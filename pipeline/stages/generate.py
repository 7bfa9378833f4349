"""generate: draw images from a folder of masks with an image generator folder or an MLflow model URI."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from ganseg.contracts import IMAGEGEN_CARD
from ganseg.imagegen.export import IMAGEGEN_WEIGHTS
from ganseg.imagegen.generate import generate_folder
from pipeline.tracking.registry import model_folder


def run(params: Params, project_root: Path, model: str, masks_dir: Path, output_dir: Path, samples: int,
        seed: int) -> dict:
    """The card carries everything the generator needs; params only limit the mask size."""
    with model_folder(model, project_root, (IMAGEGEN_CARD, (IMAGEGEN_WEIGHTS,))) as model_dir:
        summary = generate_folder(model_dir, masks_dir, output_dir, samples, seed, params.data.max_image_pixels)
    print(f"wrote {summary['images']} images from {summary['masks']} masks to {output_dir}"
          f" (images/ and masks/); {len(summary['failed'])} masks skipped")
    return summary
