"""predict stage: segment a folder of new images with a model folder or an MLflow model URI
(pipeline/prediction.py), in this process or on Ray Data workers."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from pipeline.prediction import predict_folder


def run(params: Params, project_root: Path, model: str, input_dir: str, output_dir: str, overlays: bool,
        ray_workers: int | None = None) -> dict:
    return predict_folder(params, project_root, model, input_dir, output_dir, overlays, ray_workers)
