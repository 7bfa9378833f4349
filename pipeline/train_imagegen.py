"""train_imagegen stage: Ray Train (DDP) of the mask -> image generator, run like the train stage.

The same settings of how to run (train.num_workers and use_gpu, the runtime section), the same
full-state checkpoints and recovery, one MLflow run, and a registered model of its own
(mlflow.registered_image_generator). The train stage's segmenter (models/) is the judge whose
validation score picks the best checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from ganseg.checkpoints import weights_to_export
from ganseg.config import Params
from ganseg.contracts import IMAGEGEN_CARD, ImagegenCard, read_dataset_stats, write_imagegen_card
from ganseg.evaluation import check_model_fits_data
from ganseg.export import load_model
from ganseg.fileio import atomic_dir, atomic_write_text
from ganseg.imagegen.export import (
    IMAGEGEN_WEIGHTS,
    export_image_generator,
    load_image_generator,
    without_parametrizations,
)
from ganseg.imagegen.networks import one_hot_with_void
from ganseg.imagegen.training import build_discriminator, build_generator
from pipeline import registry, tracking
from pipeline.console import LOG_DIR
from pipeline.imagegen_worker import SCORE, imagegen_loop_per_worker
from pipeline.cluster import start_ray
from pipeline.runtime import check_device_support, make_trainer, resolve_scaling, storage_path
from pipeline.train import check_checkpoints_fit, ended_as_it_went, fit_latest_and_best, open_run, run_key
from pipeline.worker import loop_config

STAGE = "train_imagegen"


def run(params: Params, project_root: Path, judge_dir: Path, out_dir: Path, history_csv: Path) -> dict:
    data_dir = project_root / params.data.output_dir
    stats = read_dataset_stats(data_dir)
    judge_card = load_model(judge_dir)[1]  # before Ray starts: the judge must read this data
    check_model_fits_data(judge_card, stats, judge_dir, data_dir)
    start_ray(project_root / LOG_DIR / f"{STAGE}.log")
    uri = tracking.tracking_uri(project_root)
    client = MlflowClient(uri)
    workers, use_gpu = resolve_scaling(params.train)
    check_device_support(params.train, use_gpu)
    key = run_key(params, stats, STAGE, judge_card.mlflow_run_id)
    run_id = open_run(client, params, project_root, STAGE, key, workers, use_gpu)
    with ended_as_it_went(client, run_id):
        name = f"{STAGE}-{run_id}"  # a rerun after a crash finds its checkpoints
        run_dir = f"{storage_path(params, project_root)}/{name}"
        cfg = params.imagegen
        check_checkpoints_fit(run_dir, build_generator(cfg, stats.num_classes, stats.channels),
                              build_discriminator(cfg, stats.num_classes, stats.channels))
        config = loop_config(params, data_dir, uri, run_id, progress=True) | {"judge_dir": str(judge_dir.resolve())}
        trainer = make_trainer(params, config, name, project_root, loop=imagegen_loop_per_worker, score=SCORE)
        latest, best = fit_latest_and_best(trainer, run_dir, SCORE)
        summary = {"best_epoch": best["epoch"], f"best_{SCORE}": best["history"][-1][SCORE], "mlflow_run_id": run_id}
        card = ImagegenCard.for_data(cfg, params.data, stats, mlflow_run_id=run_id)
        history = pd.DataFrame(latest["history"]).to_csv(index=False)
        with atomic_dir(out_dir) as staging:
            export_image_generator(staging, weights_to_export(best), card)
        atomic_write_text(history_csv, history)
        print(f"best {SCORE} {summary[f'best_{SCORE}']:.4f} at epoch {best['epoch']}; image generator in {out_dir}")
        summary |= _log_model(uri, run_id, out_dir, params.mlflow.registered_image_generator)
    return summary


def _log_model(uri: str, run_id: str, out_dir: Path, registered_name: str) -> dict:
    """Log and register the generator (input: a one-hot label map with a void channel; the noise is
    drawn inside), and note the version in its card."""
    generator, card = load_image_generator(out_dir)
    mask = torch.zeros(1, card.image_size, card.image_size, dtype=torch.long)
    example = one_hot_with_void(mask, card.num_classes).numpy()
    version = registry.log_and_register(uri, run_id, without_parametrizations(generator, card), example,
                                        [out_dir / IMAGEGEN_CARD, out_dir / IMAGEGEN_WEIGHTS], registered_name)
    registered = {"registered_model": registered_name, "registered_model_version": version}
    write_imagegen_card(out_dir, card.model_copy(update=registered))
    MlflowClient(uri).log_artifact(run_id, str(out_dir / IMAGEGEN_CARD), artifact_path="model_card")
    return registered
