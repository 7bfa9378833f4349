"""The prepare stage's work: every usable pair of the data.source folder read, fitted to the tile size, split,
counted and written to the prepared folder in one atomic move.

Prepared layout (one folder, a DVC output):
  {split}_images.npy  uint8 (N, C, H, W)     {split}_masks.npy  uint8 (N, H, W) class ids
  manifest.csv        one row per tile: stem, split, index, source files, original size
  stats.json          class names, counts per split, per-class pixel frequencies, files skipped
  skipped.csv         file, reason: every source file left out (data.on_error: skip); header only if none
  test_full/          the test images and masks at their own size, for full-resolution evaluation
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from ganseg.config import DataConfig
from ganseg.contracts import DatasetStats, write_dataset_stats
from ganseg.data.blocks import BlockResult, BlockTask, Pair, make_blocks, prepare_block
from ganseg.data.intensity import IntensityRule, resolve
from ganseg.data.preprocess import stored
from ganseg.data.sources import (
    BadFileError,
    Problem,
    describe_problems,
    image_is_eight_bit,
    read_image,
    scan_folder,
    source_folder,
)
from ganseg.data.splits import SPLITS, assign_splits
from ganseg.data.writers import join_blocks, make_folders
from ganseg.errors import DataError
from ganseg.fileio import atomic_dir

__all__ = ["SKIPPED_REPORT", "prepare_dataset", "run_in_process"]

SKIPPED_REPORT = "skipped.csv"

# How the blocks are run: given prepare_block and the blocks, their results, in any order.
RunBlocks = Callable[[Callable[[BlockTask], BlockResult], list[BlockTask]], Iterable[BlockResult]]


class SourcePlan:
    """What prepare will read from data.source: every pair with its split, the intensity rule, and
    the files already known to be unusable (`problems`).

    The split of every stem and the intensity rule are settled before the first pair is read:
    the rule may need the training images' percentiles.
    """

    def __init__(self, cfg: DataConfig, seed: int, root: Path):
        self.cfg = cfg
        self.folder = source_folder(cfg, root)
        scan = scan_folder(self.folder)
        self.problems: list[Problem] = list(scan.problems)
        in_images = {stem for stem, _, _ in scan.pairs} | {
            p.file.stem for p in self.problems if p.file.parent.name == "images"
        }
        splits = assign_splits([stem for stem, _, _ in scan.pairs], cfg, seed, present=in_images, root=root)
        self.pairs = [Pair(stem, splits[stem], image, mask) for stem, image, mask in scan.pairs]
        self.rule = self._intensity_rule()

    def _intensity_rule(self) -> IntensityRule:
        # Only `auto` asks whether every image is 8-bit: the headers are read for it alone.
        eight_bit = self.cfg.intensity.mode != "auto" or all(image_is_eight_bit(pair.image) for pair in self.pairs)
        return resolve(self.cfg.intensity, eight_bit, self._raw_training_images())

    def _raw_training_images(self) -> Iterator[np.ndarray]:
        """Training images at full depth; unreadable ones are left to the main pass to report."""
        for pair in self.pairs:
            if pair.split == "train":
                try:
                    yield read_image(pair.image, self.cfg.channels, self.cfg.max_image_pixels, self.cfg.preprocess.grey)
                except BadFileError:
                    continue


def run_in_process(prepare: Callable[[BlockTask], BlockResult], tasks: list[BlockTask]) -> Iterator[BlockResult]:
    """Blocks one after the other in this process: the default way to run them."""
    return map(prepare, tasks)


def prepare_dataset(
    cfg: DataConfig,
    seed: int,
    out_dir: str | Path,
    progress: bool = True,
    run_blocks: RunBlocks = run_in_process,
    root: str | Path = ".",
) -> DatasetStats:
    """Read, fit and split every usable pair, then write the prepared folder in one atomic move.

    Pairs go in blocks (ganseg/data/blocks.py) that `run_blocks` prepares, here one after the other
    or elsewhere all at once (pipeline/stages/prepare.py runs them as Ray Data tasks); each block writes
    its tiles into the staging folder as it goes, so memory holds one block's tiles whatever the
    number of images. Every file is checked before the staging folder replaces `out_dir`: unusable
    files stop the stage with one DataError listing them all (data.on_error: fail; nothing is
    replaced), or are left out and listed in skipped.csv (data.on_error: skip). Relative data.source
    and data.split_file paths are read from `root`; the manifest names files within data.source.
    """
    plan = SourcePlan(cfg, seed, Path(root))
    with atomic_dir(out_dir) as staging:
        make_folders(staging)
        tasks = make_blocks(plan.pairs, cfg, seed, plan.rule, staging)
        results: dict[int, BlockResult] = {}
        with tqdm(total=len(plan.pairs), desc="prepare", unit="img", leave=False, disable=not progress) as bar:
            for result in run_blocks(prepare_block, tasks):
                results[result.number] = result
                bar.update(len(tasks[result.number].pairs))
        done = [results[number] for number in range(len(tasks))]
        problems = plan.problems + [problem for result in done for problem in result.problems]
        counts = {name: sum(result.parts[name].count for result in done) for name in SPLITS}
        _check_usable(cfg, plan.folder, problems, counts, sum(result.used for result in done))
        join_blocks(staging, [result.parts for result in done], [result.test_stems for result in done])
        skipped = [{"file": str(p.file), "reason": p.reason} for p in problems]
        pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(staging / SKIPPED_REPORT, index=False)
        stats = _dataset_stats(cfg, plan.rule, done, len(problems))
        write_dataset_stats(staging, stats)
    return stats


def _check_usable(
    cfg: DataConfig, folder: Path, problems: list[Problem], counts: dict[str, int], used: int
) -> None:
    if problems and (cfg.on_error == "fail" or not any(counts.values())):
        advice = (
            "Fix or remove them, or set data.on_error: skip to leave them out (listed in skipped.csv)."
            if cfg.on_error == "fail" else "No usable pair is left."
        )
        raise DataError(
            f"{len(problems)} file(s) in {folder} cannot be used:\n"
            f"{describe_problems(folder, problems)}\n{advice}"
        )
    empty = [name for name, count in counts.items() if not count]
    if empty:
        raise DataError(f"split(s) {empty} came out empty from {used} usable images: add images or change data.split")


def _dataset_stats(cfg: DataConfig, rule: IntensityRule, blocks: list[BlockResult], skipped: int) -> DatasetStats:
    def total(split: str, field: str):
        return sum(getattr(block.parts[split], field) for block in blocks)

    def frequencies(split: str) -> list[float]:
        class_pixels = total(split, "class_pixels")
        return (class_pixels / max(class_pixels.sum(), 1)).round(6).tolist()

    def void_fraction(split: str) -> float:
        pixels = total(split, "pixels")
        return round(float(pixels - total(split, "class_pixels").sum()) / max(pixels, 1), 6)

    clipped, pixels = sum(block.clipped for block in blocks), sum(block.pixels for block in blocks)
    return DatasetStats(
        source=cfg.source,
        class_names=cfg.class_names,
        num_classes=cfg.num_classes,
        channels=cfg.channels,
        image_size=cfg.image_size,
        fit=cfg.fit,
        counts={name: total(name, "count") for name in SPLITS},
        class_frequency={name: frequencies(name) for name in SPLITS},
        void_fraction=None if cfg.ignore_index is None else {name: void_fraction(name) for name in SPLITS},
        skipped_files=skipped,
        test_images=sum(len(block.test_stems) for block in blocks),
        split_source="split_file" if cfg.split_file else "hash",
        intensity=rule,
        preprocess=stored(cfg.preprocess),
        clipped_share=round(clipped / max(pixels, 1), 6),
    )
