"""`ganseg bench fewlabels`: do generated (image, mask) pairs make a better segmenter when labels are few?

For each label budget (n labelled training images; the rest of the training images are not used)
and each seed, the arms train on the same n images, chosen by the seed:

- A: real pairs + classical augmentation (the params as given, train.synthetic off);
- B: A + generated pairs drawn from the labelled masks;
- C: A + generated pairs drawn from deformed labelled masks;
- D: generated pairs only (from deformed masks): the segmenter never sees a real image;
- E: joint: the image generator trained with the segmenter, end to end (GenSeg-style).

B, C and D share one image generator per budget and seed, trained first on the n labelled pairs
only (no image or mask of the rest leaks in; with train.lambda_adv > 0 the rest would join as
unlabelled images, train.semi, so the benchmark is meant for lambda_adv 0). Every arm is scored on
the test images and compared with A seed by seed. Pure PyTorch, no Ray.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ganseg.bench.imagegen import train_image_generator
from ganseg.bench.machine import machine
from ganseg.bench.paired import paired_comparisons
from ganseg.bench.quality import (
    mean_std,
    paired_metrics,
    score_segmenter,
    train_segmenter,
)
from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.data.datasets import PreparedSplit, labelled_split
from ganseg.errors import ParamsError
from ganseg.imagegen.training import build_state, sample
from ganseg.synthetic_pairs import GeneratedPairs, deform_masks
from ganseg.viz import panel_grid

ARMS = {
    "A": "real pairs + classical augmentation",
    "B": "A + generated pairs from the labelled masks",
    "C": "A + generated pairs from deformed masks",
    "D": "generated pairs only (deformed masks)",
    "E": "joint: generator trained with the segmenter",
}
FIGURE_ROWS = 4


def arm_overrides(arm: str, share: float) -> dict:
    """The train.synthetic settings of an arm; `share` is B, C and E's share of generated pairs."""
    return {
        "A": {"train.synthetic.share": 0.0},
        "B": {"train.synthetic.share": share, "train.synthetic.masks": "labelled", "train.synthetic.joint": False},
        "C": {"train.synthetic.share": share, "train.synthetic.masks": "deformed", "train.synthetic.joint": False},
        "D": {"train.synthetic.share": 1.0, "train.synthetic.masks": "deformed", "train.synthetic.joint": False},
        "E": {"train.synthetic.share": share, "train.synthetic.masks": "deformed", "train.synthetic.joint": True},
    }[arm]


def parse_budgets(text: str) -> list[int | None]:
    """'2,5,all' -> [2, 5, None] (None: every training image)."""
    budgets: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            budgets.append(None)
        elif item.isdigit() and int(item) > 0:
            budgets.append(int(item))
        else:
            raise ParamsError(f"--labels: {item!r} is neither a positive number of images nor 'all'")
    return budgets


def check_arms(arms: list[str]) -> None:
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown or "A" not in arms:
        raise ParamsError(f"arms must include A (the reference) and be among {', '.join(ARMS)}; got {','.join(arms)}")


def training_stems(data_dir: Path) -> int:
    manifest = pd.read_csv(data_dir / "manifest.csv")
    return manifest.loc[manifest["split"] == "train", "stem"].nunique()


def run_benchmark(params: Params, data_dir: Path, budgets: list[int | None], seeds: int, steps: int,
                  generator_steps: int, arms: list[str], share: float, figure: Path | None = None,
                  log=print) -> dict:
    """Every arm on every budget and seed params.seed, params.seed + 1, ...; per budget, the runs,
    their mean and std, and each arm's paired difference with A. With `figure`, a picture of real
    and generated pairs (smallest budget, first seed)."""
    check_arms(arms)
    arms = [arm for arm in ARMS if arm in arms]  # A first: it is the judge of the others
    stats = read_dataset_stats(data_dir)
    images = training_stems(data_dir)
    report = {"machine": machine(), "steps": steps, "generator_steps": generator_steps, "seeds": seeds,
              "share": share, "arms": {arm: ARMS[arm] for arm in arms}, "class_names": stats.class_names,
              "image_size": stats.image_size, "training_images": images, "params": params.model_dump(),
              "budgets": {}}
    for budget in budgets:
        n = images if budget is None or budget >= images else budget
        runs = []
        for offset in range(seeds):
            draw = figure if offset == 0 and budget == budgets[0] else None
            runs += _one_seed(params.with_overrides({"seed": params.seed + offset,
                                                     "train.semi.label_fraction": n / images}),
                              data_dir, n, steps, generator_steps, arms, share, draw, log)
        metrics = paired_metrics(stats.class_names)
        report["budgets"][str(n)] = {
            "labelled_images": n,
            "runs": runs,
            "summary": {arm: _summary([r for r in runs if r["config"] == arm], stats.class_names) for arm in arms},
            "paired": paired_comparisons(runs, {arm: "A" for arm in arms if arm != "A"}, metrics),
        }
    return report | ({"figure": str(figure)} if figure else {})


def _one_seed(params: Params, data_dir: Path, n: int, steps: int, generator_steps: int, arms: list[str],
              share: float, figure: Path | None, log) -> list[dict]:
    stats = read_dataset_stats(data_dir)
    labelled, _ = labelled_split(data_dir, params.train.semi.label_fraction, params.seed)
    generator = None
    if {"B", "C", "D"} & set(arms):
        started = time.perf_counter()
        generator = train_image_generator(params, data_dir, generator_steps, tiles=labelled).eval_generator
        log(f"  {n} labelled images ({len(labelled)} tiles), seed {params.seed}: image generator"
            f" {generator_steps} steps ({time.perf_counter() - started:.0f} s)")
    runs, judge, joint_generator = [], None, None
    for arm in arms:
        config = params.with_overrides(arm_overrides(arm, share))
        started = time.perf_counter()
        synthetic = None
        if arm != "A":
            joint = build_state(config.imagegen, stats.num_classes, stats.channels) if arm == "E" else None
            synthetic = GeneratedPairs(config.train.synthetic, stats.num_classes,
                                       generator=None if joint else generator, joint=joint,
                                       imagegen=config.imagegen, judge=judge)
        state, tiles = train_segmenter(config, data_dir, steps, synthetic=synthetic)
        wall = time.perf_counter() - started
        if arm == "A":
            judge = state.eval_segmenter  # drop_disagreeing's judge: trained on the same n labelled images
        if arm == "E":
            joint_generator = synthetic.joint.eval_generator
        scores = score_segmenter(state.eval_segmenter, config, data_dir)
        log(f"    {arm} ({ARMS[arm]}): mIoU {scores['miou']:.4f} ({wall:.0f} s)")
        runs.append({"config": arm, "seed": params.seed, "labelled_tiles": tiles, "wall_s": wall} | scores)
    if figure and generator is not None:
        _save_figure(params, data_dir, labelled, generator, joint_generator, stats.num_classes, figure)
    return runs


def _summary(runs: list[dict], class_names: list[str]) -> dict:
    row = {key: mean_std([r.get(key) for r in runs]) for key in ("miou", "auc_roc", "wall_s")}
    return row | {"dice": {c: mean_std([r["dice"][c] for r in runs]) for c in class_names}}


def _save_figure(params: Params, data_dir: Path, labelled: list[int], generator, joint_generator,
                 num_classes: int, path: Path) -> None:
    """Rows of labelled tiles: mask | real | drawn from it | a deformed mask | drawn from that (by the
    generator trained first, and by the jointly trained one)."""
    train = PreparedSplit(data_dir, "train")
    rows = np.sort(np.random.default_rng(params.seed).choice(labelled, min(FIGURE_ROWS, len(labelled)), replace=False))
    masks = torch.from_numpy(np.array(train.masks[rows])).long()
    torch.manual_seed(params.seed)
    deformed = deform_masks(masks, params.train.synthetic.deform)
    columns = [masks.numpy(), np.array(train.images[rows]), sample(generator, masks, num_classes, params.seed).numpy(),
               deformed.numpy(), sample(generator, deformed, num_classes, params.seed).numpy()]
    titles = ["mask", "real", "drawn (B)", "deformed", "drawn (C, D)"]
    if joint_generator is not None:
        columns.append(sample(joint_generator, deformed, num_classes, params.seed).numpy())
        titles.append("joint (E)")
    path.parent.mkdir(parents=True, exist_ok=True)
    panel_grid([list(panels) for panels in zip(*columns)], tuple(titles)).save(path)
