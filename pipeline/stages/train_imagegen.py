"""train_imagegen stage: Ray Train (DDP) of the mask -> image generator, run as the train stage runs
the segmenter (pipeline/training.py): the same settings of how to run (train.num_workers and
use_gpu, the runtime section), full-state checkpoints and recovery, one MLflow run, and a
registered model of its own (mlflow.registered_image_generator). The train stage's segmenter
(models/) is the judge whose validation score picks the best checkpoint."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from ganseg.jobs.imagegen import ImagegenJob
from pipeline.training import train


def run(params: Params, project_root: Path, judge_dir: Path, out_dir: Path, history_csv: Path) -> dict:
    return train(ImagegenJob, params, project_root, out_dir, history_csv,
                 params.mlflow.registered_image_generator, options={"judge": str(judge_dir.resolve())})
