"""evaluate stage: the train stage's segmenter (models/) on the test split, at full resolution:
metrics, plots and overlays in results/evaluation, logged to its train run in MLflow."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from pipeline.evaluation import evaluate_model


def run(params: Params, project_root: Path, models_dir: Path, out_dir: Path) -> dict:
    return evaluate_model(params, project_root, models_dir, out_dir)
