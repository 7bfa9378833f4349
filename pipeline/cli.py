"""`ganseg` command line: one subcommand per stage, each reading params.yaml plus --set overrides."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from ganseg.config import Params, load_params
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

PATH = click.Path(path_type=Path)
POSITIVE = click.IntRange(min=1)
FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)
BENCH_HELP = "measurements that print a table and write JSON"


@dataclass
class Shared:
    """The options every stage takes: --params, --root (resolved) and the --set overrides."""

    params_file: str
    root: Path
    overrides: list[str]

    def params(self, required: bool = True) -> Params:
        """The params file with --set applied; with required=False a missing file means the defaults."""
        return load_params(self.params_file, self.overrides, required=required)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order declared, as argparse listed them


@click.group("ganseg", cls=_Group, help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
def ganseg() -> None:
    pass


def stage(group: click.Group, name: str, text: str) -> Callable[[Callable[..., None]], click.Command]:
    """Make `func(shared, **options)` the subcommand `name` of `group`, with the shared options.

    The command times the run and turns a user error into `ganseg <stage>: error: ...` and exit
    status 2; bench subcommands report as `ganseg bench`.
    """
    shown = name if group is ganseg else group.name

    def decorate(func: Callable[..., None]) -> click.Command:
        # short_help too: Click would cut the text to one line in the group's list, argparse showed it whole
        @group.command(name, help=text, short_help=text)
        @click.option("--params", "params_file", type=click.Path(), default=DEFAULT_PARAMS,
                      help="params file (default: params.yaml)")
        @click.option("--root", type=PATH, default=".",
                      help="folder holding data/, models/, results/ and the default MLflow store (default: the"
                      " current folder); on a cluster, a shared mount every node can reach")
        @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="override one param, e.g. --set train.epochs=3 (repeatable; value read as YAML)")
        @functools.wraps(func)  # carries func's own options (__click_params__) over
        def command(params_file: str, root: Path, overrides: tuple[str, ...], **options) -> int:
            start = time.perf_counter()
            try:
                func(Shared(params_file, root.resolve(), list(overrides)), **options)
            except (GansegError, FileNotFoundError) as err:  # the message alone
                print(f"ganseg {shown}: error: {err}", file=sys.stderr)
                return 2
            print(f"ganseg {shown} finished in {time.perf_counter() - start:.1f} s")
            return 0

        return command

    return decorate


def _tracked(root: Path) -> Path:
    """`root`, once its MLflow store is known to be reachable: checked before any training, not after it."""
    from pipeline.tracking.runs import require_reachable, tracking_uri

    require_reachable(tracking_uri(root))
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
@click.option("--input", "input_dir", type=PATH, required=True, help="folder of images")
@click.option("--output", type=PATH, required=True, help="folder for the mask PNGs")
@click.option("--overlays", is_flag=True, help="also write <stem>_overlay.png")
def _predict(shared: Shared, model: str, input_dir: Path, output: Path, overlays: bool) -> None:
    params = shared.params(required=shared.params_file != DEFAULT_PARAMS)
    from pipeline.stages import predict
    predict.run(params, shared.root, model, input_dir, output, overlays)


@stage(ganseg, "generate", "draw images from a folder of masks with an image generator (mask -> image)")
@click.option("--model", required=True, help="an image generator folder, or a models:/ or runs:/ URI (as for predict)")
@click.option("--masks", type=PATH, required=True, help="folder of masks, in the format data settings read")
@click.option("--output", type=PATH, required=True,
              help="new folder for images/ + masks/, a dataset that data.source accepts")
@click.option("--samples", type=POSITIVE, default=1, help="images per mask (default 1)")
@click.option("--seed", type=int, default=0, help="seed of the noise (default 0)")
def _generate(shared: Shared, model: str, masks: Path, output: Path, samples: int, seed: int) -> None:
    params = shared.params(required=shared.params_file != DEFAULT_PARAMS)
    from pipeline.stages import generate
    generate.run(params, shared.root, model, masks, output, samples, seed)


@ganseg.group("bench", cls=_Group, help=BENCH_HELP, short_help=BENCH_HELP)
def bench_group() -> None:
    pass


def _contenders(ctx: click.Context, param: click.Parameter, texts: tuple[str, ...]) -> list[tuple[str, dict]]:
    from ganseg.bench.contenders import parse_contender

    try:
        return [parse_contender(text) for text in texts]
    except GansegError as err:
        raise click.BadParameter(str(err), ctx, param) from None


_data = click.option("--data", required=True,
                     help="folder with images/ and masks/ (read with the data section of params), or 'synthetic'"
                     " for the built-in data (data.synthetic), written to a temporary folder")
_figures_json = click.option("--out", type=PATH, help="also write the figures as JSON here")
_table_json = click.option("--out", type=PATH, help="also write the table as JSON here")


@stage(bench_group, "throughput", "training images/s: plain loop (fp32, bf16, channels_last, torch.compile) vs Ray Train"
       " with 1 and 2 workers")
@click.option("--steps", type=POSITIVE, default=50,
              help="steps per timed window, best of 3 (default 50; 10 for the plain-loop variants)")
@click.option("--rounds", type=POSITIVE, default=3,
              help="rounds of plain loop, Ray 1 worker, Ray 2 workers; medians reported (default 3)")
@_figures_json
def _bench_throughput(shared: Shared, steps: int, rounds: int, out: Path | None) -> None:
    from pipeline.stages import bench
    bench.run(shared.params(), out, steps, rounds)


@stage(bench_group, "predict", "prediction images/s and peak memory on 512 x 512 images and one 4096 x 4096 image")
@click.option("--model", help="an exported model folder (default: params.model with fresh weights)")
@click.option("--sizes", default="512x8,4096x1",
              help="SIZExCOUNT images to segment, each with flips off and on (default 512x8,4096x1)")
@_figures_json
def _bench_predict(shared: Shared, model: str | None, sizes: str, out: Path | None) -> None:
    from pipeline.stages import bench
    bench.predict(shared.params(), model, sizes, out)


@stage(bench_group, "prepare", "prepare's wall time, peak memory and MB/s on folders of image/mask pairs it writes")
@click.option("--images", default="1000,4000", help="numbers of image pairs, comma-separated (default 1000,4000)")
@click.option("--size", type=POSITIVE, default=512, help="side of each image in pixels (default 512)")
@click.option("--cpus", default="1,2",
              help="numbers of CPUs to prepare on as Ray Data tasks, besides in one process (default 1,2)")
@click.option("--workdir", type=PATH, help="where the folders are written (default: the system's temp folder)")
@_figures_json
def _bench_prepare(shared: Shared, images: str, size: int, cpus: str, workdir: Path | None, out: Path | None) -> None:
    from pipeline.stages import bench
    bench.prepare(shared.params(), images, size, cpus, workdir, out)


@stage(bench_group, "quality", "supervised baseline vs GAN segmenter or named variants (and supervised vs semi-supervised"
       " on a label fraction): trained for the same steps on the same split, scored on the test images at full size,"
       " compared seed by seed")
@_data
@click.option("--seeds", type=POSITIVE, default=3,
              help="seeds per config (default 3; the paired confidence intervals want 3 or more)")
@click.option("--steps", type=POSITIVE, default=600, help="segmenter updates per run (default 600)")
@click.option("--label-fraction", type=FRACTION,
              help="also compare supervised and semi-supervised with this share of the training images labelled")
@click.option("--contender", "contenders", multiple=True, callback=_contenders, metavar="NAME=KEY=VALUE,...",
              help="a named GAN variant, params plus dotted-key overrides (values read as YAML, as --set), e.g."
              " 'lsgan=train.adv_loss=lsgan,train.lambda_adv=0.01'; repeatable; replaces the default GAN row,"
              " every variant is compared with the same supervised baseline")
@click.option("--split", type=click.Choice(("test", "val")), default="test",
              help="score the test images at full size (default) or the validation tiles, to choose settings without"
              " touching the test split")
@_table_json
@click.option("--figure", type=PATH, help="also draw, as a PNG here, the scored images where the first GAN row and"
              " the baseline differ most (first seed)")
def _bench_quality(shared: Shared, data: str, seeds: int, steps: int, label_fraction: float | None, contenders: list,
                   split: str, out: Path | None, figure: Path | None) -> None:
    from pipeline.stages import bench
    bench.quality(shared.params(), data, seeds, steps, label_fraction, out, contenders, split, figure)


@stage(bench_group, "imagegen", "mask -> image generator variants (SPADE + PatchGAN, SPADE + OASIS, pix2pix) trained for"
       " the same steps and judged by a segmenter trained on the same split: judge mIoU on generated vs real test"
       " tiles, KID, diversity, memorisation")
@_data
@click.option("--variants", default="spade+patch,spade+oasis,pix2pix",
              help="comma-separated, the first is the reference (default: all three)")
@click.option("--seeds", type=POSITIVE, default=1, help="seeds per variant (default 1)")
@click.option("--steps", type=POSITIVE, default=1000, help="updates per generator (default 1000)")
@click.option("--judge-steps", type=POSITIVE, default=800, help="updates of the judge segmenter (default 800)")
@_table_json
@click.option("--grids", type=PATH, help="also draw mask | real | samples per variant as PNGs in this folder")
def _bench_imagegen(shared: Shared, data: str, variants: str, seeds: int, steps: int, judge_steps: int,
                    out: Path | None, grids: Path | None) -> None:
    from pipeline.stages import bench
    bench.imagegen(shared.params(), data, variants.split(","), seeds, steps, judge_steps, out, grids)


@stage(bench_group, "fewlabels", "do generated pairs help when labels are few? arms A (real + classical augmentation), B"
       " (+ pairs drawn from the labelled masks), C (+ from deformed masks), D (generated only), E (joint training)"
       " per label budget, each compared with A seed by seed")
@click.option("--labels", default="2,5,all",
              help="label budgets: numbers of labelled training images, or all (default 2,5,all)")
@_data
@click.option("--arms", default="A,B,C,D,E", help="comma-separated, A included (default A,B,C,D,E)")
@click.option("--seeds", type=POSITIVE, default=3,
              help="seeds per arm and budget; each seed also picks the labelled images (default 3)")
@click.option("--steps", type=POSITIVE, default=600, help="segmenter updates per arm (default 600)")
@click.option("--generator-steps", type=POSITIVE, default=800,
              help="updates of the image generator used by B, C, D (default 800)")
@click.option("--share", type=FRACTION, default=0.5, help="share of each batch generated in B, C, E (default 0.5; D is 1)")
@_table_json
@click.option("--figure", type=PATH,
              help="also draw labelled pairs next to generated ones (smallest budget, first seed) as a PNG")
def _bench_fewlabels(shared: Shared, data: str, labels: str, seeds: int, arms: str, steps: int, generator_steps: int,
                     share: float, out: Path | None, figure: Path | None) -> None:
    from pipeline.stages import bench
    bench.fewlabels(shared.params(), data, labels, seeds, steps, generator_steps, arms.split(","), share, out, figure)


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
