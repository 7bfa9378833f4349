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
from ganseg.contracts import read_dataset_stats
from ganseg.evaluation import check_image_generator_fits_data, check_model_fits_data
from ganseg.export import load_model
from ganseg.fileio import atomic_dir, atomic_write_text, read_json, write_json
from pipeline import evaluate, train

OFF = ("train.synthetic.share is 0: no segmenter trained on generated pairs. Set it above 0 (see"
       " docs/fewlabels.md) and run `dvc repro` to train one.")


def run(params: Params, project_root: Path, best_config: Path, generator_dir: Path, judge_dir: Path,
        models_dir: Path, history_csv: Path, eval_dir: Path, train_metrics: Path, overrides: list[str] = (),
        params_file: str = "params.yaml") -> dict:
    effective, _ = train.layered_params(params, train.tuned_overrides(best_config), overrides, str(best_config))
    if effective.train.synthetic.share == 0:
        return _off(models_dir, eval_dir)
    _check_inputs(effective, project_root, generator_dir, judge_dir, train_metrics)
    train.run(params, project_root, best_config, models_dir, history_csv, overrides, params_file,
              generated_from={"image_generator": generator_dir, "judge": judge_dir})
    metrics = evaluate.run(effective, project_root, models_dir, eval_dir)
    without = read_json(train_metrics)["test"]["miou"]
    with_generated = metrics["test"]["miou"]
    metrics["compared_with_train_stage"] = {"test_miou": without, "difference": with_generated - without}
    write_json(eval_dir / "metrics.json", metrics)
    print(f"test mIoU {with_generated:.4f} with generated pairs, {without:.4f} without"
          f" ({with_generated - without:+.4f})")
    return metrics


def _check_inputs(params: Params, project_root: Path, generator_dir: Path, judge_dir: Path,
                  train_metrics: Path) -> None:
    """Before any training: the image generator, the judge and the train stage's test scores exist,
    and the generator and judge were trained for this data's classes and channels."""
    from ganseg.imagegen.export import load_image_generator

    if not train_metrics.is_file():
        raise FileNotFoundError(f"{train_metrics} is missing: evaluate the train stage's model first (ganseg evaluate)")
    data_dir = project_root / params.data.output_dir
    stats = read_dataset_stats(data_dir)
    check_model_fits_data(load_model(judge_dir)[1], stats, judge_dir, data_dir)
    check_image_generator_fits_data(load_image_generator(generator_dir)[1], stats, generator_dir, data_dir)


def _off(models_dir: Path, eval_dir: Path) -> dict:
    print(OFF)
    with atomic_dir(models_dir) as staging:
        atomic_write_text(staging / "README.txt", OFF + "\n")
    metrics = {"trained": False, "reason": OFF}
    with atomic_dir(eval_dir) as staging:
        write_json(staging / "metrics.json", metrics)
    return metrics
