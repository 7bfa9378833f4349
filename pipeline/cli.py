"""`ganseg` command line: one subcommand per stage, each reading params.yaml plus --set overrides."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from ganseg.config import load_params
from ganseg.errors import GansegError

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
DEFAULT_PARAMS = "params.yaml"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    common.add_argument(
        "--root", default=".", type=Path,
        help="folder holding data/, models/, results/ and the default MLflow store (default: the current"
        " folder); on a cluster, a shared mount every node can reach",
    )
    common.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one param, e.g. --set train.epochs=3 (repeatable; value read as YAML)",
    )
    parser = argparse.ArgumentParser(prog="ganseg", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("synthesize", parents=[common],
                   help="write the built-in dataset (data.synthetic) to data/synthetic, the default data.source")
    sub.add_parser("prepare", parents=[common], help="build data/prepared from the data.source folder")
    sub.add_parser("tune", parents=[common], help="Ray Tune search; writes results/tune/best_config.json")
    sub.add_parser("train", parents=[common], help="Ray Train DDP with the tuned config; writes models/")
    sub.add_parser("evaluate", parents=[common], help="test metrics, plots and overlays in results/evaluation")
    sub.add_parser("train-imagegen", parents=[common],
                   help="Ray Train DDP of the mask -> image generator, judged by models/; writes image_generator/")
    sub.add_parser("evaluate-imagegen", parents=[common],
                   help="judge mIoU ratio, KID, diversity and memorisation of image_generator/ in results/imagegen")
    sub.add_parser("train-synthetic", parents=[common],
                   help="with train.synthetic.share > 0: the segmenter trained on real + generated pairs (drawn by"
                   " image_generator/), evaluated beside models/; writes models_synthetic/ and results/synthetic")
    predict = sub.add_parser("predict", parents=[common], help="segment a folder of images with a model folder or an MLflow model URI")
    predict.add_argument(
        "--model", default=str(MODELS_DIR),
        help="a model folder (default: models), a registry URI such as models:/ganseg-segmenter@champion,"
        " or a run URI runs:/<run_id>/model (fetched from MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    predict.add_argument("--input", required=True, type=Path, help="folder of images")
    predict.add_argument("--output", required=True, type=Path, help="folder for the mask PNGs")
    predict.add_argument("--overlays", action="store_true", help="also write <stem>_overlay.png")
    generate = sub.add_parser("generate", parents=[common],
                              help="draw images from a folder of masks with an image generator (mask -> image)")
    generate.add_argument("--model", required=True,
                          help="an image generator folder, or a models:/ or runs:/ URI (as for predict)")
    generate.add_argument("--masks", required=True, type=Path, help="folder of masks, in the format data settings read")
    generate.add_argument("--output", required=True, type=Path,
                          help="new folder for images/ + masks/, a dataset that data.source accepts")
    generate.add_argument("--samples", type=_positive_int, default=1, help="images per mask (default 1)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    bench = sub.add_parser("bench", help="measurements that print a table and write JSON")
    kinds = bench.add_subparsers(dest="bench", required=True)
    throughput = kinds.add_parser("throughput", parents=[common],
                                  help="training images/s: plain loop (fp32, bf16, channels_last, torch.compile) vs"
                                  " Ray Train with 1 and 2 workers")
    throughput.add_argument("--steps", type=_positive_int, default=50,
                            help="steps per timed window, best of 3 (default 50; 10 for the plain-loop variants)")
    throughput.add_argument("--rounds", type=_positive_int, default=3,
                            help="rounds of plain loop, Ray 1 worker, Ray 2 workers; medians reported (default 3)")
    throughput.add_argument("--out", type=Path, help="also write the figures as JSON here")
    predict = kinds.add_parser("predict", parents=[common],
                               help="prediction images/s and peak memory on 512 x 512 images and one 4096 x 4096 image")
    predict.add_argument("--model", help="an exported model folder (default: params.model with fresh weights)")
    predict.add_argument("--sizes", default="512x8,4096x1",
                         help="SIZExCOUNT images to segment, each with flips off and on (default 512x8,4096x1)")
    predict.add_argument("--out", type=Path, help="also write the figures as JSON here")
    prepare = kinds.add_parser("prepare", parents=[common],
                               help="prepare's wall time, peak memory and MB/s on folders of image/mask pairs it writes")
    prepare.add_argument("--images", default="1000,4000", help="numbers of image pairs, comma-separated (default 1000,4000)")
    prepare.add_argument("--size", type=_positive_int, default=512, help="side of each image in pixels (default 512)")
    prepare.add_argument("--cpus", default="1,2",
                         help="numbers of CPUs to prepare on as Ray Data tasks, besides in one process (default 1,2)")
    prepare.add_argument("--workdir", type=Path, help="where the folders are written (default: the system's temp folder)")
    prepare.add_argument("--out", type=Path, help="also write the figures as JSON here")
    quality = kinds.add_parser(
        "quality", parents=[common],
        help="supervised baseline vs GAN segmenter or named variants (and supervised vs semi-supervised on a label"
        " fraction): trained for the same steps on the same split, scored on the test images at full size,"
        " compared seed by seed",
    )
    _data_argument(quality)
    quality.add_argument("--seeds", type=_positive_int, default=3,
                         help="seeds per config (default 3; the paired confidence intervals want 3 or more)")
    quality.add_argument("--steps", type=_positive_int, default=600, help="generator updates per run (default 600)")
    quality.add_argument("--label-fraction", type=_fraction, default=None,
                         help="also compare supervised and semi-supervised with this share of the training images labelled")
    quality.add_argument(
        "--contender", dest="contenders", action="append", type=_contender, default=[], metavar="NAME=KEY=VALUE,...",
        help="a named GAN variant, params plus dotted-key overrides (values read as YAML, as --set), e.g."
        " 'lsgan=train.adv_loss=lsgan,train.lambda_adv=0.01'; repeatable; replaces the default GAN row,"
        " every variant is compared with the same supervised baseline",
    )
    quality.add_argument("--split", choices=("test", "val"), default="test",
                         help="score the test images at full size (default) or the validation tiles, to choose"
                         " settings without touching the test split")
    quality.add_argument("--out", type=Path, help="also write the table as JSON here")
    quality.add_argument("--figure", type=Path,
                         help="also draw, as a PNG here, the scored images where the first GAN row and the baseline"
                         " differ most (first seed)")
    imagegen = kinds.add_parser(
        "imagegen", parents=[common],
        help="mask -> image generator variants (SPADE + PatchGAN, SPADE + OASIS, pix2pix) trained for the same"
        " steps and judged by a segmenter trained on the same split: judge mIoU on generated vs real test tiles,"
        " KID, diversity, memorisation",
    )
    _data_argument(imagegen)
    imagegen.add_argument("--variants", default="spade+patch,spade+oasis,pix2pix",
                          help="comma-separated, the first is the reference (default: all three)")
    imagegen.add_argument("--seeds", type=_positive_int, default=1, help="seeds per variant (default 1)")
    imagegen.add_argument("--steps", type=_positive_int, default=1000, help="updates per generator (default 1000)")
    imagegen.add_argument("--judge-steps", type=_positive_int, default=800,
                          help="updates of the judge segmenter (default 800)")
    imagegen.add_argument("--out", type=Path, help="also write the table as JSON here")
    imagegen.add_argument("--grids", type=Path, help="also draw mask | real | samples per variant as PNGs in this folder")
    fewlabels = kinds.add_parser(
        "fewlabels", parents=[common],
        help="do generated pairs help when labels are few? arms A (real + classical augmentation), B (+ pairs drawn"
        " from the labelled masks), C (+ from deformed masks), D (generated only), E (joint training) per label"
        " budget, each compared with A seed by seed",
    )
    _data_argument(fewlabels)
    fewlabels.add_argument("--labels", default="2,5,all",
                           help="label budgets: numbers of labelled training images, or all (default 2,5,all)")
    fewlabels.add_argument("--seeds", type=_positive_int, default=3,
                           help="seeds per arm and budget; each seed also picks the labelled images (default 3)")
    fewlabels.add_argument("--arms", default="A,B,C,D,E", help="comma-separated, A included (default A,B,C,D,E)")
    fewlabels.add_argument("--steps", type=_positive_int, default=600, help="segmenter updates per arm (default 600)")
    fewlabels.add_argument("--generator-steps", type=_positive_int, default=800,
                           help="updates of the image generator used by B, C, D (default 800)")
    fewlabels.add_argument("--share", type=_fraction, default=0.5,
                           help="share of each batch generated in B, C, E (default 0.5; D is 1)")
    fewlabels.add_argument("--out", type=Path, help="also write the table as JSON here")
    fewlabels.add_argument("--figure", type=Path,
                           help="also draw labelled pairs next to generated ones (smallest budget, first seed) as a PNG")
    return parser


def _data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="folder with images/ and masks/ (read with the data section of params), or 'synthetic'"
                        " for the built-in data (data.synthetic), written to a temporary folder")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _contender(text: str) -> tuple[str, dict]:
    from ganseg.bench.contenders import parse_contender

    try:
        return parse_contender(text)
    except GansegError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _dispatch(args: argparse.Namespace) -> None:
    root = args.root.resolve()
    # predict and generate may run anywhere: without params.yaml beside them, the defaults apply (an explicit --params must exist)
    optional = args.stage in ("predict", "generate") and args.params == DEFAULT_PARAMS
    params = load_params(args.params, args.overrides, required=not optional)
    if args.stage == "predict":
        from pipeline import predict

        predict.run(params, root, args.model, args.input, args.output, args.overlays)
        return
    if args.stage in ("tune", "train", "evaluate", "train-imagegen", "evaluate-imagegen", "train-synthetic"):
        from pipeline.tracking import require_reachable, tracking_uri

        require_reachable(tracking_uri(root))  # before any training, not after it
    if args.stage == "synthesize":
        from pipeline import synthesize

        synthesize.run(params, root)
    elif args.stage == "prepare":
        from pipeline import prepare

        prepare.run(params, root)
    elif args.stage == "tune":
        from pipeline import tune

        tune.run(params, root, root / BEST_CONFIG)
    elif args.stage == "train":
        from pipeline import train

        # --set goes over the tuned config, so train starts from the params file alone
        train.run(load_params(args.params), root, root / BEST_CONFIG, root / MODELS_DIR, root / HISTORY_CSV,
                  overrides=args.overrides, params_file=args.params)
    elif args.stage == "train-synthetic":
        from pipeline import train_synthetic

        train_synthetic.run(load_params(args.params), root, root / BEST_CONFIG, root / IMAGEGEN_DIR, root / MODELS_DIR,
                            root / SYNTHETIC_MODELS_DIR, root / SYNTHETIC_HISTORY, root / SYNTHETIC_EVAL,
                            root / EVAL_DIR / "metrics.json", overrides=args.overrides, params_file=args.params)
    elif args.stage == "train-imagegen":
        from pipeline import train_imagegen

        train_imagegen.run(params, root, root / MODELS_DIR, root / IMAGEGEN_DIR, root / IMAGEGEN_HISTORY)
    elif args.stage == "evaluate-imagegen":
        from pipeline import evaluate_imagegen

        evaluate_imagegen.run(params, root, root / MODELS_DIR, root / IMAGEGEN_DIR, root / IMAGEGEN_EVAL)
    elif args.stage == "generate":
        from pipeline import generate

        generate.run(params, root, args.model, args.masks, args.output, args.samples, args.seed)
    elif args.stage == "evaluate":
        from pipeline import evaluate

        evaluate.run(params, root, root / MODELS_DIR, root / EVAL_DIR)
    elif args.stage == "bench" and args.bench == "quality":
        from pipeline import bench

        bench.quality(params, args.data, args.seeds, args.steps, args.label_fraction, args.out,
                      args.contenders, args.split, args.figure)
    elif args.stage == "bench" and args.bench == "imagegen":
        from pipeline import bench

        bench.imagegen(params, args.data, args.variants.split(","), args.seeds, args.steps, args.judge_steps,
                       args.out, args.grids)
    elif args.stage == "bench" and args.bench == "fewlabels":
        from pipeline import bench

        bench.fewlabels(params, args.data, args.labels, args.seeds, args.steps, args.generator_steps,
                        args.arms.split(","), args.share, args.out, args.figure)
    elif args.stage == "bench" and args.bench == "prepare":
        from pipeline import bench

        bench.prepare(params, args.images, args.size, args.cpus, args.workdir, args.out)
    elif args.stage == "bench" and args.bench == "predict":
        from pipeline import bench

        bench.predict(params, args.model, args.sizes, args.out)
    elif args.stage == "bench":
        from pipeline import bench

        bench.run(params, args.out, args.steps, args.rounds)


def main(argv: list[str] | None = None) -> int:
    # Nothing leaves the machine: no usage statistics from Ray or MLflow.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow draws a progress bar for each artifact it moves, even a model card of a few bytes.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        _dispatch(args)
    except (GansegError, FileNotFoundError) as err:  # the message alone
        print(f"ganseg {args.stage}: error: {err}", file=sys.stderr)
        return 2
    print(f"ganseg {args.stage} finished in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
