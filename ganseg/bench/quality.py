"""Segmentation quality of the GAN segmenter against the supervised baseline: pure PyTorch, no Ray.

Every configuration trains on the same prepared split for the same number of steps, seed by
seed, and is scored on the held-out test images at their own size. Configurations:
(a) the supervised baseline (lambda_adv = 0), (b) the GAN segmenter as params say, and, given a
label fraction, (c) supervised on that fraction of the training images, (d) semi-supervised with
the rest of the images unlabelled.
"""

from __future__ import annotations

import itertools
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.data.datasets import endless, labelled_frequency, training_batches
from ganseg.evaluation import evaluate_full_size, summarise
from ganseg.segmenter.training import build_training_state, train_epoch


@dataclass(frozen=True)
class Contender:
    name: str
    overrides: dict


def contenders(label_fraction: float | None) -> list[Contender]:
    rows = [Contender("supervised baseline", {"train.lambda_adv": 0.0}), Contender("GAN segmenter", {})]
    if label_fraction is not None:
        share = f"{label_fraction:.0%} labels"
        rows += [
            Contender(f"supervised, {share}", {"train.lambda_adv": 0.0, "train.semi.label_fraction": label_fraction}),
            Contender(f"semi-supervised, {share}", {"train.semi.label_fraction": label_fraction}),
        ]
    return rows


def train_and_score(params: Params, data_dir: Path, steps: int, progress: bool = False) -> dict:
    """Train from scratch for `steps` generator updates, split into train.epochs equal epochs,
    then score the test images at full size. Deterministic for a given params.seed."""
    torch.manual_seed(params.seed)
    stats = read_dataset_stats(data_dir)
    state = build_training_state(params, stats.channels, stats.num_classes, labelled_frequency(data_dir, params))
    labelled, unlabelled = training_batches(
        data_dir, params, stats.image_size, lambda dataset: _shuffled(dataset, params)
    )
    batches = endless(labelled)
    epochs = params.train.epochs
    per_epoch = math.ceil(steps / epochs)
    images, started = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        count = min(per_epoch, steps - (epoch - 1) * per_epoch)
        if count <= 0:
            break
        epoch_means = train_epoch(
            state, itertools.islice(batches, count), params.train, epoch=epoch, unlabelled=unlabelled
        )
        images += count * params.train.batch_size
        if progress:
            print(f"    epoch {epoch}/{epochs}: loss_seg {epoch_means['loss_seg']:.4f}", flush=True)
    seconds = time.perf_counter() - started
    result = evaluate_full_size(state.eval_generator, data_dir, stats, params.evaluate.boundary_tolerance, keep=0,
                                progress=False, flips=params.evaluate.flip_tta)
    summary = summarise(result.confusion, stats.class_names, stats.train_frequency, result.boundary_f1)
    return {
        "miou": summary["miou"],
        "dice": summary["dice"],
        "boundary_f1": summary["boundary_f1"],
        "images_per_s": images / seconds if seconds else float("nan"),
        "labelled_tiles": len(labelled.dataset),
        "test_images": result.num_images,
    }


def _shuffled(dataset, params: Params) -> DataLoader:
    generator = torch.Generator().manual_seed(params.seed)
    drop_last = len(dataset) >= params.train.batch_size
    return DataLoader(dataset, batch_size=params.train.batch_size, shuffle=True, drop_last=drop_last, generator=generator)


def run_benchmark(
    params: Params, data_dir: Path, seeds: int, steps: int, label_fraction: float | None, log=print
) -> dict:
    """Every contender on seeds params.seed, params.seed+1, ...; the runs and their mean and std."""
    stats = read_dataset_stats(data_dir)
    runs = []
    for contender in contenders(label_fraction):
        for offset in range(seeds):
            seed = params.seed + offset
            config = params.with_overrides(contender.overrides | {"seed": seed})
            started = time.perf_counter()
            scores = train_and_score(config, data_dir, steps)
            log(f"  {contender.name}, seed {seed}: mIoU {scores['miou']:.4f}"
                f" ({time.perf_counter() - started:.0f} s, {scores['images_per_s']:.1f} img/s)")
            runs.append({"config": contender.name, "seed": seed, "overrides": contender.overrides} | scores)
    return {
        "machine": machine(),
        "steps": steps,
        "seeds": seeds,
        "label_fraction": label_fraction,
        "class_names": stats.class_names,
        "image_size": stats.image_size,
        "fit": stats.fit,
        "test_images": runs[0]["test_images"] if runs else 0,
        "params": params.model_dump(),
        "runs": runs,
        "summary": summarise_runs(runs, stats.class_names),
    }


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, {device}"


def summarise_runs(runs: list[dict], class_names: list[str]) -> dict:
    """Per contender: mean and std (over seeds) of mIoU, img/s and each class's Dice and boundary F1."""
    summary: dict = {}
    for name in dict.fromkeys(run["config"] for run in runs):
        mine = [run for run in runs if run["config"] == name]
        row = {"miou": _mean_std([r["miou"] for r in mine]), "images_per_s": _mean_std([r["images_per_s"] for r in mine])}
        for metric in ("dice", "boundary_f1"):
            row[metric] = {c: _mean_std([r[metric][c] for r in mine]) for c in class_names}
        summary[name] = row
    return summary


def _mean_std(values: list) -> dict:
    kept = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not kept.size:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(kept.mean()), "std": float(kept.std(ddof=1)) if kept.size > 1 else 0.0, "n": int(kept.size)}
