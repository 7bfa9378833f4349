"""The prepare stage's work: every usable pair of data.source read, fitted to the tile size, split,
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
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ganseg.config import DataConfig
from ganseg.contracts import DatasetStats, write_dataset_stats
from ganseg.data import synthetic
from ganseg.data.intensity import IntensityRule, resolve
from ganseg.data.sources import (
    BadFileError,
    Problem,
    Sample,
    describe_problems,
    image_is_eight_bit,
    load_pair,
    read_image,
    scan_folder,
    source_folder,
)
from ganseg.data.splits import SPLITS, assign_splits
from ganseg.data.void import VOID
from ganseg.errors import DataError
from ganseg.fileio import atomic_dir

SKIPPED_REPORT = "skipped.csv"
FULL_TEST_DIR = "test_full"


def fit_to_size(sample: Sample, size: int, mode: str) -> list[Sample]:
    """Resize to size x size, or cut into size x size tiles (images smaller than a tile are resized)."""
    height, width = sample.mask.shape
    if mode == "resize" or height < size or width < size:
        image = _resize(sample.image, size, Image.BILINEAR)
        mask = _resize(sample.mask, size, Image.NEAREST)
        return [Sample(sample.stem, image, mask, sample.image_path, sample.mask_path)]
    tiles = []
    for top in range(0, height - size + 1, size):
        for left in range(0, width - size + 1, size):
            window = np.s_[top : top + size, left : left + size]
            tiles.append(
                Sample(sample.stem, sample.image[window], sample.mask[window], sample.image_path, sample.mask_path)
            )
    return tiles


def _resize(array: np.ndarray, size: int, resample: int) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    squeeze = array.ndim == 3 and array.shape[2] == 1
    img = Image.fromarray(array[..., 0] if squeeze else array)
    out = np.asarray(img.resize((size, size), resample))
    return out[..., None] if squeeze else out


class SourceReader:
    """The samples of data.source one at a time, each with its split; files that cannot be used gather
    in `problems`.

    The split of every stem and the intensity rule are settled before the first sample is read:
    the rule may need the training images' percentiles.
    """

    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.folder: Path | None = None
        self.pairs: list[tuple[str, Path, Path]] = []
        self.problems: list[Problem] = []
        self.used = 0
        self.clipped = self.pixels = 0  # image values the intensity rule clipped, of all values read
        if cfg.source == "synthetic":
            stems = [_synthetic_stem(i) for i in range(cfg.synthetic.num_images)]
            self.splits = assign_splits(stems, cfg, seed)
            self.rule = IntensityRule("dtype")
            return
        self.folder = source_folder(cfg)
        scan = scan_folder(self.folder)
        self.pairs, self.problems = scan.pairs, list(scan.problems)
        in_images = {stem for stem, _, _ in self.pairs} | {
            p.file.stem for p in self.problems if p.file.parent.name == "images"
        }
        self.splits = assign_splits([stem for stem, _, _ in self.pairs], cfg, seed, present=in_images)
        self.rule = self._intensity_rule()

    def __len__(self) -> int:
        return self.cfg.synthetic.num_images if self.folder is None else len(self.pairs)

    def __iter__(self) -> Iterator[tuple[Sample, str]]:
        if self.folder is None:
            yield from self._synthetic()
            return
        for stem, image_path, mask_path in self.pairs:
            sample, problems, clipped = load_pair(stem, image_path, mask_path, self.cfg, self.rule)
            self.problems += problems
            if sample is not None:
                self.used += 1
                self.clipped += clipped
                self.pixels += sample.image.size
                yield sample, self.splits[stem]

    def _intensity_rule(self) -> IntensityRule:
        # Only `auto` asks whether every image is 8-bit: the headers are read for it alone.
        eight_bit = self.cfg.intensity.mode != "auto" or all(image_is_eight_bit(image) for _, image, _ in self.pairs)
        return resolve(self.cfg.intensity, eight_bit, self._raw_training_images())

    def _raw_training_images(self) -> Iterator[np.ndarray]:
        """Training images at full depth; unreadable ones are left to the main pass to report."""
        for stem, image_path, _ in self.pairs:
            if self.splits[stem] == "train":
                try:
                    yield read_image(image_path, self.cfg.channels, self.cfg.max_image_pixels)
                except BadFileError:
                    continue

    def _synthetic(self) -> Iterator[tuple[Sample, str]]:
        for index in range(self.cfg.synthetic.num_images):
            image, mask = synthetic.generate_sample(self.seed, index, self.cfg.synthetic.size)
            image = np.repeat(image[..., None], self.cfg.channels, axis=2)
            self.used += 1
            stem = _synthetic_stem(index)
            yield Sample(stem, image, mask, "synthetic", "synthetic"), self.splits[stem]


def _synthetic_stem(index: int) -> str:
    return f"synth_{index:05d}"


def prepare_dataset(cfg: DataConfig, seed: int, out_dir: str | Path, progress: bool = True) -> DatasetStats:
    """Read, fit and split every usable pair, then write the prepared folder in one atomic move.

    Every file is checked before anything is written. Unusable files stop the stage with one
    DataError listing them all (data.on_error: fail), or are left out and listed in skipped.csv
    (data.on_error: skip).
    """
    reader = SourceReader(cfg, seed)
    tiles: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    full_test: list[Sample] = []  # the test images at their own size, for full-resolution evaluation
    for sample, split in tqdm(reader, total=len(reader), desc="prepare", unit="img", disable=not progress):
        tiles[split].extend(fit_to_size(sample, cfg.image_size, cfg.fit))
        if split == "test":
            full_test.append(sample)
    _check_usable(cfg, reader, tiles)
    with atomic_dir(out_dir) as staging:
        _save_full_size(full_test, staging / FULL_TEST_DIR)
        rows = []
        for name, items in tiles.items():
            images = np.stack([s.image.transpose(2, 0, 1) for s in items])
            masks = np.stack([s.mask for s in items])
            np.save(staging / f"{name}_images.npy", images)
            np.save(staging / f"{name}_masks.npy", masks)
            rows += [
                {"stem": s.stem, "split": name, "index": i, "image_file": s.image_path, "mask_file": s.mask_path}
                for i, s in enumerate(items)
            ]
        pd.DataFrame(rows).to_csv(staging / "manifest.csv", index=False)
        skipped = [{"file": str(p.file), "reason": p.reason} for p in reader.problems]
        pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(staging / SKIPPED_REPORT, index=False)
        stats = _dataset_stats(cfg, tiles, reader, len(full_test))
        write_dataset_stats(staging, stats)
    return stats


def _check_usable(cfg: DataConfig, reader: SourceReader, tiles: dict[str, list[Sample]]) -> None:
    if reader.problems and (cfg.on_error == "fail" or not any(tiles.values())):
        advice = (
            "Fix or remove them, or set data.on_error: skip to leave them out (listed in skipped.csv)."
            if cfg.on_error == "fail" else "No usable pair is left."
        )
        raise DataError(
            f"{len(reader.problems)} file(s) in {reader.folder} cannot be used:\n"
            f"{describe_problems(reader.folder, reader.problems)}\n{advice}"
        )
    empty = [name for name, items in tiles.items() if not items]
    if empty:
        raise DataError(
            f"split(s) {empty} came out empty from {reader.used} usable images:"
            " add images or change data.split"
        )


def _dataset_stats(
    cfg: DataConfig, tiles: dict[str, list[Sample]], reader: SourceReader, test_images: int
) -> DatasetStats:
    def counts(items: list[Sample]) -> np.ndarray:
        """Pixels per class, void pixels left out."""
        return sum(np.bincount(s.mask[s.mask != VOID], minlength=cfg.num_classes) for s in items)

    def frequencies(items: list[Sample]) -> list[float]:
        per_class = counts(items)
        return (per_class / max(per_class.sum(), 1)).round(6).tolist()

    def void_fraction(items: list[Sample]) -> float:
        pixels = sum(s.mask.size for s in items)
        return round(float(pixels - counts(items).sum()) / max(pixels, 1), 6)

    return DatasetStats(
        source=cfg.source,
        class_names=cfg.class_names,
        num_classes=cfg.num_classes,
        channels=cfg.channels,
        image_size=cfg.image_size,
        fit=cfg.fit,
        counts={name: len(items) for name, items in tiles.items()},
        class_frequency={name: frequencies(items) for name, items in tiles.items()},
        void_fraction=(
            None if cfg.ignore_index is None else {name: void_fraction(items) for name, items in tiles.items()}
        ),
        skipped_files=len(reader.problems),
        test_images=test_images,
        split_source="split_file" if cfg.split_file else "hash",
        intensity=reader.rule,
        clipped_share=round(reader.clipped / max(reader.pixels, 1), 6),
    )


def _save_full_size(samples: list[Sample], folder: Path) -> None:
    """images/NNNNN.png and masks/NNNNN.png (class ids), in the order of the stems in stems.txt."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, sample in enumerate(samples):
        image = sample.image[..., 0] if sample.image.shape[2] == 1 else sample.image
        Image.fromarray(image).save(folder / "images" / f"{i:05d}.png")
        Image.fromarray(sample.mask).save(folder / "masks" / f"{i:05d}.png")
    (folder / "stems.txt").write_text("".join(f"{s.stem}\n" for s in samples))
