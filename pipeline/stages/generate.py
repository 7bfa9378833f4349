"""generate: draw images from a folder of masks with an image generator folder or an MLflow model URI."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ganseg.config import Params
from ganseg.contracts import IMAGEGEN_CARD
from ganseg.imagegen.export import IMAGEGEN_WEIGHTS
from ganseg.imagegen.generate import generate_folder
from pipeline.tracking.registry import download_model, is_mlflow_uri
from pipeline.tracking.runs import require_reachable, tracking_uri


def run(params: Params, project_root: Path, model: str, masks_dir: Path, output_dir: Path, samples: int,
        seed: int) -> dict:
    """The card carries everything the generator needs; params only limit the mask size."""
    with tempfile.TemporaryDirectory(prefix="ganseg-imagegen-") as scratch:
        model_dir = Path(model)
        if is_mlflow_uri(model):
            uri = tracking_uri(project_root)
            require_reachable(uri)
            model_dir = download_model(model, uri, Path(scratch), (IMAGEGEN_CARD, (IMAGEGEN_WEIGHTS,)))
            print(f"image generator {model} fetched from {uri}")
        summary = generate_folder(model_dir, masks_dir, output_dir, samples, seed, params.data.max_image_pixels)
    print(f"wrote {summary['images']} images from {summary['masks']} masks to {output_dir}"
          f" (images/ and masks/); {len(summary['failed'])} masks skipped")
    return summary
