"""predict stage: segment a folder of new images with a model folder or an MLflow model URI."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ganseg.config import Params
from ganseg.segmenter.segment_folder import segment_folder
from pipeline.tracking.registry import download_model, is_mlflow_uri
from pipeline.tracking.runs import require_reachable, tracking_uri


def run(params: Params, project_root: Path, model: str, input_dir: Path, output_dir: Path, overlays: bool) -> dict:
    """The model card carries everything the model needs; params only limit the image size and
    choose test-time flips (evaluate.flip_tta), as in the evaluate stage."""
    with tempfile.TemporaryDirectory(prefix="ganseg-model-") as scratch:
        model_dir = Path(model)
        if is_mlflow_uri(model):
            uri = tracking_uri(project_root)
            require_reachable(uri)
            model_dir = download_model(model, uri, Path(scratch))
            print(f"model {model} fetched from {uri}")
        summary = segment_folder(
            model_dir, input_dir, output_dir, overlays, params.data.max_image_pixels, params.evaluate.flip_tta
        )
    print(f"wrote {summary['written']} masks to {output_dir}; {len(summary['failed'])} files skipped")
    return summary
