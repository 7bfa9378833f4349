"""train stage: Ray Train (DDP) of the GAN segmenter with the tuned config (pipeline/training.py);
writes models/ and registers it as a version of mlflow.registered_model."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from ganseg.jobs.segmenter import SegmenterJob
from pipeline.settings import effective_settings
from pipeline.training import train


def run(params: Params, project_root: Path, best_config: Path, models_dir: Path, history_csv: Path,
        overrides: list[str] = (), params_file: str = "params.yaml") -> dict:
    """`params` as in the params file; the tuned best config, then `overrides` (--set) go over them."""
    params = effective_settings(params, project_root, best_config, overrides, params_file)
    return train(SegmenterJob, params, project_root, models_dir, history_csv, params.mlflow.registered_model)
