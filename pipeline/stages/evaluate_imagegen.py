"""evaluate_imagegen stage: the image generator judged on the test tiles by the train stage's
segmenter (ganseg/imagegen/evaluation.py); metrics.json for `dvc metrics`, a sample grid, and
both logged to the generator's MLflow run; the registry's champion rule on the judge mIoU ratio."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.data.datasets import PreparedSplit
from ganseg.fileio import atomic_dir, write_json
from ganseg.imagegen.evaluation import (
    check_image_generator_fits_data,
    grid_rows,
    judge_generator,
)
from ganseg.imagegen.export import load_image_generator
from ganseg.segmenter.evaluation import check_model_fits_data
from ganseg.segmenter.export import load_model
from ganseg.viz import sample_grid
from pipeline.console import closing, shown_path
from pipeline.tracking import registry, runs

RATIO = "judge_miou_ratio"
GRID_ROWS = 8


def run(params: Params, project_root: Path, judge_dir: Path, generator_dir: Path, out_dir: Path) -> dict:
    data_dir = project_root / params.data.output_dir
    stats = read_dataset_stats(data_dir)
    judge, judge_card = load_model(judge_dir)
    check_model_fits_data(judge_card, stats, judge_dir, data_dir)
    generator, card = load_image_generator(generator_dir)
    check_image_generator_fits_data(card, stats, generator_dir, data_dir)
    client = MlflowClient(runs.tracking_uri(project_root)) if card.mlflow_run_id else None
    if client:  # before evaluating: the results must be able to reach the run
        run = client.get_run(card.mlflow_run_id)
        runs.require_artifact_access(client, run.info.artifact_uri, f"run {card.mlflow_run_id}")
    figures, drawn = judge_generator(generator, judge, data_dir, stats.num_classes, params.imagegen.samples, params.seed)
    test = PreparedSplit(data_dir, "test")
    rows = grid_rows(test.masks, GRID_ROWS)
    with atomic_dir(out_dir) as staging:
        write_json(staging / "metrics.json", figures)
        sample_grid(test.masks[rows], test.images[rows], drawn[rows].numpy()).save(staging / "samples.png")
    print(f"judge mIoU {figures['judge_miou_generated']:.4f} on generated / {figures['judge_miou_real']:.4f} on real"
          f" test tiles (ratio {figures[RATIO]:.3f}), KID {figures['kid']:.4f} ± {figures['kid_std']:.4f},"
          f" diversity {figures['diversity']:.3f}, nearest training image {figures['nearest_train_generated']:.3f}"
          f" generated / {figures['nearest_train_real']:.3f} real; {figures['test_masks']} test masks"
          f" x {figures['samples_per_mask']} samples; {shown_path(out_dir / 'samples.png')}")
    if client:
        numbers = {f"test_{key}": value for key, value in figures.items() if isinstance(value, float)}
        runs.log_metrics(client, card.mlflow_run_id, numbers, step=0)
        client.log_artifact(card.mlflow_run_id, str(out_dir / "samples.png"), artifact_path="evaluation")
        if card.registered_model and card.registered_model_version:
            closing(registry.record_and_promote(client, card.registered_model, card.registered_model_version,
                                                figures[RATIO], metric=RATIO))
    return figures
