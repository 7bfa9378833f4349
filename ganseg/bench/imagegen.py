"""`ganseg bench imagegen`: mask -> image generator variants side by side, judged by a segmenter.

A judge segmenter (the supervised baseline, lambda_adv 0) is trained once on the prepared training
tiles; then every variant trains on the same tiles for the same number of steps, seed by seed, and
is judged on the test tiles (ganseg/imagegen/evaluation.py). Every variant but the first is also
compared with the first, seed by seed. Pure PyTorch, no Ray.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from ganseg.bench.machine import machine
from ganseg.bench.paired import paired_comparisons
from ganseg.bench.quality import mean_std, seeded_loader, train_segmenter
from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.data.augment import pair_transform
from ganseg.data.datasets import Endless, PreparedSplit
from ganseg.errors import ParamsError
from ganseg.imagegen.evaluation import grid_rows, judge_generator
from ganseg.imagegen.training import ImagegenState, build_state, train_epoch
from ganseg.viz import sample_grid

VARIANTS = {
    "spade+patch": {"imagegen.generator": "spade", "imagegen.discriminator": "patch"},
    "spade+oasis": {"imagegen.generator": "spade", "imagegen.discriminator": "oasis"},
    "pix2pix": {"imagegen.generator": "pix2pix", "imagegen.discriminator": "patch"},
}
FIGURES = ("judge_miou_generated", "judge_miou_ratio", "kid", "diversity", "memorisation_ratio")
GRID_ROWS = 4


def train_image_generator(params: Params, data_dir: Path, steps: int, tiles: list[int] | None = None) -> ImagegenState:
    """An image generator trained from scratch for `steps` updates on the augmented training tiles
    (or only those numbered `tiles`), split into imagegen.epochs equal epochs. Deterministic for a
    given params.seed."""
    torch.manual_seed(params.seed)
    cfg = params.imagegen
    stats = read_dataset_stats(data_dir)
    state = build_state(cfg, stats.num_classes, stats.channels)
    train_set = PreparedSplit(data_dir, "train", pair_transform(cfg.augment, stats.image_size))
    if tiles is not None:
        train_set = Subset(train_set, tiles)
    batches = Endless(seeded_loader(train_set, cfg.batch_size, params.seed))
    per_epoch = math.ceil(steps / cfg.epochs)
    for epoch in range(cfg.epochs):
        count = min(per_epoch, steps - epoch * per_epoch)
        if count <= 0:
            break
        train_epoch(state, itertools.islice(batches, count), cfg)
    return state


def check_variants(variants: list[str]) -> None:
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise ParamsError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(VARIANTS)}")


def run_benchmark(
    params: Params, data_dir: Path, seeds: int, steps: int, judge_steps: int, variants: list[str],
    grids: Path | None = None, log=print,
) -> dict:
    """The judge, then every variant on seeds params.seed, params.seed + 1, ...; with `grids`, a
    picture per variant there (mask | real | samples, first seed)."""
    check_variants(variants)
    stats = read_dataset_stats(data_dir)
    started = time.perf_counter()
    judge_params = params.with_overrides({"train.lambda_adv": 0.0, "train.semi.label_fraction": 1.0})
    judge = train_segmenter(judge_params, data_dir, judge_steps)[0].eval_segmenter.eval()
    log(f"  judge: {judge_steps} steps ({time.perf_counter() - started:.0f} s)")
    runs = []
    for name, offset in itertools.product(variants, range(seeds)):
        seed = params.seed + offset
        config = params.with_overrides(VARIANTS[name] | {"seed": seed})
        started = time.perf_counter()
        state = train_image_generator(config, data_dir, steps)
        trained = time.perf_counter() - started
        figures, drawn = judge_generator(state.eval_generator, judge, data_dir, stats.num_classes,
                                         config.imagegen.samples, seed)
        log(f"  {name}, seed {seed}: judge mIoU {figures['judge_miou_generated']:.3f} generated /"
            f" {figures['judge_miou_real']:.3f} real, KID {figures['kid']:.4f},"
            f" diversity {figures['diversity']:.3f} ({trained:.0f} s training)")
        runs.append({"config": name, "seed": seed, "train_s": trained} | figures)
        if grids and offset == 0:
            _save_grid(data_dir, drawn, grids / f"{name}.png")
    references = {name: variants[0] for name in variants[1:]}
    metrics = {"judge mIoU ratio": lambda run: run["judge_miou_ratio"], "diversity": lambda run: run["diversity"],
               "-KID (higher is better)": lambda run: -run["kid"]}
    return {
        "machine": machine(), "steps": steps, "judge_steps": judge_steps, "seeds": seeds,
        "class_names": stats.class_names, "image_size": stats.image_size, "counts": stats.counts,
        "params": params.model_dump(), "variants": {name: VARIANTS[name] for name in variants},
        "runs": runs, "summary": _summary(runs, variants), "paired": paired_comparisons(runs, references, metrics),
    }


def _summary(runs: list[dict], variants: list[str]) -> dict:
    keys = ("judge_miou_real", *FIGURES, "nearest_train_generated", "nearest_train_real", "train_s")
    return {name: {key: mean_std([r[key] for r in runs if r["config"] == name]) for key in keys} for name in variants}


def _save_grid(data_dir: Path, drawn: torch.Tensor, path: Path) -> None:
    test = PreparedSplit(data_dir, "test")
    rows = grid_rows(test.masks, GRID_ROWS)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_grid(test.masks[rows], test.images[rows], drawn[rows].numpy()).save(path)
