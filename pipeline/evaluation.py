"""A segmenter folder evaluated on the test split (the evaluate and train_synthetic stages): metrics,
plots and overlays, also logged to the model's training run in MLflow, and the champion alias moved
to the model when its test mIoU is the best."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.devices import inference_device
from ganseg.fileio import atomic_dir
from ganseg.segmenter.evaluation import (
    check_model_fits_data,
    evaluate_full_size,
    write_report,
)
from ganseg.segmenter.export import load_model
from pipeline.console import closing
from pipeline.tracking import registry, runs

AUC_LABELS = {"auc_roc": "AUC-ROC", "auc_pr": "AUC-PR"}  # binary tasks only
REPORT_FILES = ("metrics.json", "per_class.csv", "confusion_matrix.png", "per_class_iou.png", "overlays")


def evaluate_model(params: Params, project_root: Path, models_dir: Path, out_dir: Path) -> dict:
    data_dir = project_root / params.data.output_dir
    stats = read_dataset_stats(data_dir)
    segmenter, card = load_model(models_dir)
    check_model_fits_data(card, stats, models_dir, data_dir)
    segmenter = segmenter.to(inference_device())
    run_id = card.mlflow_run_id
    client = MlflowClient(runs.tracking_uri(project_root)) if run_id else None
    if client:  # before evaluating: the results must be able to reach the train run
        runs.require_artifact_access(client, client.get_run(run_id).info.artifact_uri, f"train run {run_id}")
    tolerance = params.evaluate.boundary_tolerance
    result = evaluate_full_size(
        segmenter, data_dir, stats, tolerance, keep=params.evaluate.num_overlays, flips=params.evaluate.flip_tta
    )
    with atomic_dir(out_dir) as staging:
        metrics = write_report(result, stats, staging, params.evaluate.num_overlays, tolerance)
    test = metrics["test"]
    auc = "".join(f"  {label} {test[key]:.4f}" for key, label in AUC_LABELS.items() if test.get(key) is not None)
    print(
        f"test mIoU {test['miou']:.4f}  mean Dice {test['mdice']:.4f}  pixel accuracy {test['pixel_accuracy']:.4f}"
        f"  boundary F1 {test['mean_boundary_f1'] or float('nan'):.4f}{auc}"
        f"  (majority-class baseline mIoU {test['majority_baseline']['miou']:.4f})"
        f" on {metrics['num_test_images']} images at full resolution"
    )
    if client:
        _log_to_run(client, run_id, test, out_dir)
        name, version = card.registered_model, card.registered_model_version
        if name and version and test["miou"] is not None:
            closing(registry.record_and_promote(client, name, version, test["miou"]))
    return metrics


def _log_to_run(client: MlflowClient, run_id: str, test: dict, out_dir: Path) -> None:
    flat = {"test_miou": test["miou"], "test_mdice": test["mdice"], "test_pixel_accuracy": test["pixel_accuracy"]}
    flat |= {f"test_iou_{k}": v for k, v in test["iou"].items() if v is not None}
    flat |= {f"test_dice_{k}": v for k, v in test["dice"].items() if v is not None}
    flat |= {f"test_boundary_f1_{k}": v for k, v in test["boundary_f1"].items() if v is not None}
    flat |= {f"test_{k}": test[k] for k in AUC_LABELS if test.get(k) is not None}
    runs.log_metrics(client, run_id, flat, step=0)
    for name in ("confusion_matrix.png", "per_class_iou.png"):
        client.log_artifact(run_id, str(out_dir / name), artifact_path="evaluation")
    client.log_artifacts(run_id, str(out_dir / "overlays"), artifact_path="evaluation/overlays")
