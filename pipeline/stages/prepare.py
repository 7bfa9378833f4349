"""prepare stage: the data.source folder (data/synthetic, the built-in default, or a user's) ->
data/prepared.

DVC watches what prepare reads: the data.source folder is a dependency of the stage, so a split
file must lie inside it (`check_watched`).

The blocks of pairs (ganseg/data/blocks.py) are prepared in this process, or as Ray Data tasks on
every CPU of the Ray cluster (data.ray_data): locally a private Ray runtime, under `ray job submit`
the job's cluster, whose nodes either all see the prepared folder's parent (a shared --root) or
pass their files through the project's store (GANSEG_STORE: pipeline/ray/data.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ganseg.config import DataConfig, Params
from ganseg.contracts import DatasetStats
from ganseg.data.blocks import PAIRS_PER_BLOCK
from ganseg.data.prepare import (
    SKIPPED_REPORT,
    RunBlocks,
    prepare_dataset,
    run_in_process,
)
from ganseg.data.preprocess import describe as describe_preprocess
from ganseg.data.sources import source_path
from ganseg.data.splits import split_file_path
from ganseg.errors import DataError
from pipeline.console import LOG_DIR, closing, shown_path
from pipeline.ray.data import RayDataBlocks

# Less image data than this prepares faster in one process than with Ray Data on 2 CPUs, Ray's start
# included (ganseg bench prepare: 1,000 PNGs of 512 x 512, 237 MB, took 10.6 s in process, 12.4 s
# plus 6 s to start Ray on 2 CPUs).
RAY_DATA_MIN_BYTES = 500 * 10**6


def run(params: Params, project_root: Path) -> DatasetStats:
    check_watched(params.data, project_root)
    out_dir = project_root / params.data.output_dir
    run_blocks: RunBlocks = run_in_process
    if uses_ray_data(params.data, project_root):
        from pipeline.ray.cluster import start_ray

        start_ray(project_root / LOG_DIR / "prepare.log")
        run_blocks = RayDataBlocks()
    stats = prepare_dataset(params.data, params.seed, out_dir, run_blocks=run_blocks, root=project_root)
    if isinstance(run_blocks, RayDataBlocks):
        nodes = run_blocks.nodes
        print(f"Ray Data: {sum(nodes.values())} blocks of up to {PAIRS_PER_BLOCK} pairs on {len(nodes)} node(s)")
    counts = ", ".join(f"{k} {v}" for k, v in stats.counts.items())
    shares = ", ".join(f"{n} {f:.1%}" for n, f in zip(stats.class_names, stats.train_frequency))
    void = stats.void_fraction
    void_note = f" (of the annotated ones; void: {void['train']:.1%}, in no loss or metric)" if void else ""
    closing(f"prepared {shown_path(out_dir)}: {counts} tiles of {stats.image_size}px;"
            f" train pixels: {shares}{void_note}")
    _report_intensity(stats)
    if stats.skipped_files:
        print(f"skipped {stats.skipped_files} unusable file(s) (data.on_error: skip): see {out_dir / SKIPPED_REPORT}")
    return stats


def check_watched(cfg: DataConfig, project_root: Path) -> None:
    """Refuse a split file outside the data.source folder: dvc.yaml names that folder as prepare's
    dependency, so DVC would not see the file change."""
    if cfg.split_file is None:
        return
    folder = source_path(cfg, project_root).resolve()
    split_file = split_file_path(cfg, project_root).resolve()
    if not split_file.is_relative_to(folder):
        raise DataError(
            f"data.split_file {cfg.split_file} lies outside data.source {cfg.source}: DVC watches only that folder"
            " (prepare's dependency in dvc.yaml), so it would not rerun prepare when the split changes; move the"
            " file into the folder, e.g. data.split_file: " + str(Path(cfg.source) / split_file.name)
        )


def uses_ray_data(cfg: DataConfig, project_root: Path) -> bool:
    if cfg.ray_data != "auto":
        return cfg.ray_data
    if os.environ.get("RAY_ADDRESS"):
        return True
    if len(os.sched_getaffinity(0)) < 2:
        return False
    images = source_path(cfg, project_root) / "images"
    return images.is_dir() and _holds_at_least(images, RAY_DATA_MIN_BYTES)  # else prepare says what is missing


def _holds_at_least(folder: Path, size: int) -> bool:
    """Whether the files of `folder` take at least `size` bytes (counted until they do)."""
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            total += entry.stat().st_size if entry.is_file() else 0
            if total >= size:
                return True
    return False


def _report_intensity(stats: DatasetStats) -> None:
    rule = stats.intensity
    steps = describe_preprocess(stats.preprocess)
    then = f", then {steps} (data.preprocess)" if steps else ""
    print(f"image values mapped to 0..255 by {rule.describe()} (data.intensity){then}")
    clipped = stats.clipped_share
    if clipped and rule.mode in ("dtype", "fixed"):
        print(f"warning: {clipped:.2%} of the image values fell outside that range and were clipped;"
              " data.intensity.mode: image_percentiles (or a wider fixed range) keeps them", file=sys.stderr)
