"""train_synthetic stage: the segmenter trained on real + generated pairs (train.synthetic), then
scored on the test images beside the train stage's segmenter.

With train.synthetic.share 0 (the default) it trains nothing, and says so in its outputs. Otherwise
it is the train stage (the tuned config, Ray Train DDP, checkpoints and recovery, an MLflow run, a
version of mlflow.registered_model) with the last share of every batch drawn by image_generator/
from the batch's masks (or, with joint, by an image generator trained alongside), then the evaluate
stage on its model; the champion alias moves to it when its test mIoU is higher. metrics.json
also holds the train stage's test mIoU and the difference.
"""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from ganseg.fileio import atomic_dir, atomic_write_text, read_json, write_json
from pipeline.console import closing
from pipeline.settings import effective_settings, layered_params, tuned_overrides

OFF = ("train.synthetic.share is 0: no segmenter trained on generated pairs. Set it above 0 (see"
       " docs/fewlabels.md) and run `dvc repro` to train one.")


def run(params: Params, project_root: Path, best_config: Path, generator_dir: Path, judge_dir: Path,
        models_dir: Path, history_csv: Path, eval_dir: Path, train_metrics: Path, overrides: list[str] = (),
        params_file: str = "params.yaml") -> dict:
    effective, _ = layered_params(params, tuned_overrides(best_config), overrides, str(best_config), params_file)
    if effective.train.synthetic.share == 0:
        return _off(models_dir, eval_dir)
    if not train_metrics.is_file():
        raise FileNotFoundError(f"{train_metrics} is missing: evaluate the train stage's model first (ganseg evaluate)")
    # here, not at the top: off (the default), the stage needs neither Ray, MLflow nor torch
    from ganseg.jobs.synthetic import SyntheticJob
    from pipeline.evaluation import evaluate_model
    from pipeline.training import train

    effective = effective_settings(params, project_root, best_config, overrides, params_file)
    options = {"image_generator": str(generator_dir.resolve()), "judge": str(judge_dir.resolve())}
    train(SyntheticJob, effective, project_root, models_dir, history_csv, effective.mlflow.registered_model, options)
    metrics = evaluate_model(effective, project_root, models_dir, eval_dir)
    without = read_json(train_metrics)["test"]["miou"]
    with_generated = metrics["test"]["miou"]
    metrics["compared_with_train_stage"] = {"test_miou": without, "difference": with_generated - without}
    write_json(eval_dir / "metrics.json", metrics)
    print(f"test mIoU {with_generated:.4f} with generated pairs, {without:.4f} without"
          f" ({with_generated - without:+.4f})")
    return metrics


def _off(models_dir: Path, eval_dir: Path) -> dict:
    closing(OFF)
    with atomic_dir(models_dir) as staging:
        atomic_write_text(staging / "README.txt", OFF + "\n")
    metrics = {"trained": False, "reason": OFF}
    with atomic_dir(eval_dir) as staging:
        write_json(staging / "metrics.json", metrics)
    return metrics
