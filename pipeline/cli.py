"""`ganseg` command line: one subcommand per stage, each reading params.yaml plus --set overrides
(the shared machinery in pipeline/commands.py, the benchmarks in pipeline/cli_bench.py)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ganseg.config import load_params
from pipeline.cli_bench import bench_group
from pipeline.commands import (
    DEFAULT_PARAMS,
    PATH,
    POSITIVE,
    Shared,
    cpu_option,
    ganseg,
    stage,
)
from pipeline.workspace import project_store

BEST_CONFIG = Path("results/tune/best_config.json")
MODELS_DIR = Path("models")
HISTORY_CSV = Path("results/train_history.csv")
EVAL_DIR = Path("results/evaluation")
IMAGEGEN_DIR = Path("image_generator")
IMAGEGEN_HISTORY = Path("results/imagegen_history.csv")
IMAGEGEN_EVAL = Path("results/imagegen")
SYNTHETIC_MODELS_DIR = Path("models_synthetic")
SYNTHETIC_HISTORY = Path("results/synthetic_history.csv")
SYNTHETIC_EVAL = Path("results/synthetic")


def _tracked(root: Path) -> Path:
    """`root`, once its MLflow store is known to be reachable: checked before any training, not after it."""
    from pipeline.tracking.runs import (
        require_reachable,
        require_shared_store,
        tracking_uri,
    )

    uri = tracking_uri(root)
    if project_store():
        require_shared_store(uri, "the project is on object storage (GANSEG_STORE)")
    require_reachable(uri)
    return root


@stage(ganseg, "synthesize", "write the built-in dataset (data.synthetic) to data/synthetic, the default data.source")
def _synthesize(shared: Shared) -> None:
    from pipeline.stages import synthesize
    synthesize.run(shared.params(), shared.root)


@stage(ganseg, "prepare", "build data/prepared from the data.source folder")
def _prepare(shared: Shared) -> None:
    from pipeline.stages import prepare
    prepare.run(shared.params(), shared.root)


@stage(ganseg, "tune", "Ray Tune search; writes results/tune/best_config.json")
def _tune(shared: Shared) -> None:
    params, root = shared.params(), _tracked(shared.root)
    from pipeline.stages import tune
    tune.run(params, root, root / BEST_CONFIG)


@stage(ganseg, "train", "Ray Train DDP with the tuned config; writes models/")
def _train(shared: Shared) -> None:
    # the file alone: train.run puts the tuned config, then --set over it
    params, root = load_params(shared.params_file), _tracked(shared.root)
    from pipeline.stages import train
    train.run(params, root, root / BEST_CONFIG, root / MODELS_DIR, root / HISTORY_CSV,
              overrides=shared.overrides, params_file=shared.params_file)


@stage(ganseg, "evaluate", "test metrics, plots and overlays in results/evaluation")
@cpu_option
def _evaluate(shared: Shared) -> None:
    params, root = shared.params(), _tracked(shared.root)
    from pipeline.stages import evaluate
    evaluate.run(params, root, root / MODELS_DIR, root / EVAL_DIR)


@stage(ganseg, "train-imagegen",
       "Ray Train DDP of the mask -> image generator, judged by models/; writes image_generator/")
def _train_imagegen(shared: Shared) -> None:
    params, root = shared.params(), _tracked(shared.root)
    from pipeline.stages import train_imagegen
    train_imagegen.run(params, root, root / MODELS_DIR, root / IMAGEGEN_DIR, root / IMAGEGEN_HISTORY)


@stage(ganseg, "evaluate-imagegen",
       "judge mIoU ratio, KID, diversity and memorisation of image_generator/ in results/imagegen")
def _evaluate_imagegen(shared: Shared) -> None:
    params, root = shared.params(), _tracked(shared.root)
    from pipeline.stages import evaluate_imagegen
    evaluate_imagegen.run(params, root, root / MODELS_DIR, root / IMAGEGEN_DIR, root / IMAGEGEN_EVAL)


@stage(ganseg, "train-synthetic",
       "with train.synthetic.share > 0: the segmenter trained on real + generated pairs (drawn by"
       " image_generator/), evaluated beside models/; writes models_synthetic/ and results/synthetic")
def _train_synthetic(shared: Shared) -> None:
    params, root = load_params(shared.params_file), _tracked(shared.root)  # as for train
    from pipeline.stages import train_synthetic
    train_synthetic.run(params, root, root / BEST_CONFIG, root / IMAGEGEN_DIR, root / MODELS_DIR,
                        root / SYNTHETIC_MODELS_DIR, root / SYNTHETIC_HISTORY, root / SYNTHETIC_EVAL,
                        root / EVAL_DIR / "metrics.json", overrides=shared.overrides, params_file=shared.params_file)


# predict and generate may run anywhere: without params.yaml beside them the defaults apply (an explicit --params must exist)
@stage(ganseg, "predict", "segment a folder of images with a model folder or an MLflow model URI")
@click.option("--model", default=str(MODELS_DIR),
              help="a model folder (default: models), a registry URI such as models:/ganseg-segmenter@champion,"
              " or a run URI runs:/<run_id>/model (fetched from MLFLOW_TRACKING_URI, else ./mlflow.db)")
@click.option("--input", "input_dir", required=True, help="folder of images: a local folder, or s3://BUCKET/PREFIX")
@click.option("--output", required=True, help="folder for the mask PNGs: a local folder, or s3://BUCKET/PREFIX")
@click.option("--overlays", is_flag=True, help="also write <stem>_overlay.png")
@click.option("--ray-workers", type=click.IntRange(min=0), default=None,
              help="0: segment in this process; N: on N Ray Data workers (default: in a Ray job, one worker per GPU"
              " of the cluster, else per CPU; elsewhere this process)")
@cpu_option
def _predict(shared: Shared, model: str, input_dir: str, output: str, overlays: bool, ray_workers: int | None) -> None:
    params = shared.params(required=shared.params_file != DEFAULT_PARAMS)
    from pipeline.stages import predict
    predict.run(params, shared.root, model, input_dir, output, overlays, ray_workers)


@stage(ganseg, "generate", "draw images from a folder of masks with an image generator (mask -> image)")
@click.option("--model", required=True, help="an image generator folder, or a models:/ or runs:/ URI (as for predict)")
@click.option("--masks", type=PATH, required=True, help="folder of masks, in the format data settings read")
@click.option("--output", type=PATH, required=True,
              help="new folder for images/ + masks/, a dataset that data.source accepts")
@click.option("--samples", type=POSITIVE, default=1, help="images per mask (default 1)")
@click.option("--seed", type=int, default=0, help="seed of the noise (default 0)")
@cpu_option
def _generate(shared: Shared, model: str, masks: Path, output: Path, samples: int, seed: int) -> None:
    params = shared.params(required=shared.params_file != DEFAULT_PARAMS)
    from pipeline.stages import generate
    generate.run(params, shared.root, model, masks, output, samples, seed)


ganseg.add_command(bench_group)


@ganseg.command("submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
                short_help="run a stage as a Ray job on the cluster in RAY_ADDRESS, with this checkout's code",
                help="Run `ganseg STAGE [OPTIONS]` as a Ray job on the cluster in RAY_ADDRESS, with this checkout as"
                " the job's working dir and its git commit carried into the runs, e.g. `ganseg submit train`.")
@click.argument("stage_args", nargs=-1, type=click.UNPROCESSED)
def _submit(stage_args: tuple[str, ...]) -> int:
    from ganseg.errors import GansegError
    from pipeline import submit

    try:
        return submit.run(list(stage_args), Path.cwd())
    except GansegError as err:
        print(f"ganseg submit: error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    # Nothing leaves the machine: no usage statistics from Ray or MLflow.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow draws a progress bar for each artifact it moves, even a model card of a few bytes.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
    try:
        # not standalone: the status comes back (a stage's 0 or 2, --help's 0) instead of a SystemExit
        return ganseg.main(argv, prog_name="ganseg", standalone_mode=False)
    except click.ClickException as err:  # a usage error
        err.show()
        return err.exit_code
    except click.Abort as abort:  # Click wraps Ctrl-C (KeyboardInterrupt) and EOFError in Abort: end as before
        raise (abort.__cause__ or abort) from None


if __name__ == "__main__":
    sys.exit(main())
