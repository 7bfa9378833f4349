"""`ganseg bench ...`: the benchmarks, each a command that prints a table and can write JSON."""

from __future__ import annotations

from pathlib import Path

import click

from ganseg.errors import GansegError
from pipeline.commands import FRACTION, PATH, POSITIVE, Group, Shared, stage

BENCH_HELP = "measurements that print a table and write JSON"


@click.group("bench", cls=Group, help=BENCH_HELP, short_help=BENCH_HELP)
def bench_group() -> None:
    pass


def _contenders(ctx: click.Context, param: click.Parameter, texts: tuple[str, ...]) -> list[tuple[str, dict]]:
    from ganseg.bench.contenders import parse_contender

    try:
        return [parse_contender(text) for text in texts]
    except GansegError as err:
        raise click.BadParameter(str(err), ctx, param) from None


def _budgets(ctx: click.Context, param: click.Parameter, text: str) -> list[int]:
    """'1000,4000' -> [1000, 4000], ascending and each once."""
    try:
        budgets = sorted({int(part) for part in text.split(",")})
    except ValueError:
        budgets = []
    if not budgets or budgets[0] < 1:
        raise click.BadParameter(f"expected positive numbers of steps, comma-separated, got {text!r}", ctx, param)
    return budgets


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
@click.option("--variants", default="fp32,bf16,channels_last,torch.compile",
              help="plain-loop variants to time against fp32, comma-separated (default: all four)")
@_figures_json
def _bench_throughput(shared: Shared, steps: int, rounds: int, variants: str, out: Path | None) -> None:
    from pipeline.stages import bench
    bench.run(shared.params(), out, steps, rounds, variants=bench.parse_variants(variants))


@stage(bench_group, "predict", "prediction images/s and peak memory on 512 x 512 images and one 4096 x 4096 image")
@click.option("--model", help="an exported model folder (default: params.model with fresh weights)")
@click.option("--sizes", default="512x8,4096x1",
              help="SIZExCOUNT images to segment, each with flips off and on (default 512x8,4096x1)")
@click.option("--folder", default="512x64",
              help="SIZExCOUNT PNGs for ganseg predict of a folder, in this process and on Ray (default 512x64)")
@click.option("--ray-workers", default="1,2", help="numbers of Ray Data workers for that folder, comma-separated"
              " (default 1,2; none: no folder runs)")
@_figures_json
def _bench_predict(shared: Shared, model: str | None, sizes: str, folder: str, ray_workers: str,
                   out: Path | None) -> None:
    from pipeline.stages import bench
    bench.predict(shared.params(), model, sizes, out, folder, ray_workers)


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
@click.option("--steps", default="600", callback=_budgets, metavar="STEPS[,STEPS...]",
              help="segmenter updates per run (default 600); several, comma-separated, train every config at each"
              " budget: a learning curve")
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
              " the baseline differ most (first seed, largest budget)")
@click.option("--baseline-only", is_flag=True, help="train and score the supervised baseline alone, compared with"
              " nothing: a recipe's figures")
@click.option("--curve", type=PATH, help="with several --steps: also plot each config's scores against its budget"
              " (mean ± std over seeds) as a PNG here")
@click.option("--resume", is_flag=True, help="take the runs already in --out FILE (written after every run) instead"
              " of training them again: an interrupted benchmark goes on where it stopped")
def _bench_quality(shared: Shared, data: str, seeds: int, steps: list[int], label_fraction: float | None,
                   contenders: list, split: str, out: Path | None, figure: Path | None, baseline_only: bool,
                   curve: Path | None, resume: bool) -> None:
    from pipeline.stages import bench
    if curve and len(steps) < 2:
        raise click.BadParameter("a learning curve needs several budgets, e.g. --steps 1000,4000,16000",
                                 param_hint="--curve")
    bench.quality(shared.params(), data, seeds, steps, label_fraction, out, contenders, split, figure, curve,
                  baseline_only, resume)


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
