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

import csv
import shutil
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

    Pairs stream through: each is read, fitted and appended to its split's arrays in the staging
    folder before the next is read, so memory holds one image and its tiles whatever the number of
    images. Every file is checked before the staging folder replaces `out_dir`: unusable files stop
    the stage with one DataError listing them all (data.on_error: fail; nothing is replaced), or
    are left out and listed in skipped.csv (data.on_error: skip).
    """
    reader = SourceReader(cfg, seed)
    with atomic_dir(out_dir) as staging:
        writers = {name: SplitWriter(staging, name, cfg.num_classes) for name in SPLITS}
        full_test = FullSizeWriter(staging / FULL_TEST_DIR)
        for sample, split in tqdm(reader, total=len(reader), desc="prepare", unit="img", disable=not progress):
            for tile in fit_to_size(sample, cfg.image_size, cfg.fit):
                writers[split].add(tile)
            if split == "test":
                full_test.add(sample)
        _check_usable(cfg, reader, {name: writer.count for name, writer in writers.items()})
        with open(staging / "manifest.csv", "w") as manifest:
            manifest.write("stem,split,index,image_file,mask_file\n")
            for writer in writers.values():
                writer.finish(manifest)
        full_test.finish()
        skipped = [{"file": str(p.file), "reason": p.reason} for p in reader.problems]
        pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(staging / SKIPPED_REPORT, index=False)
        stats = _dataset_stats(cfg, writers, reader, full_test.count)
        write_dataset_stats(staging, stats)
    return stats


class SplitWriter:
    """One split's tiles: gathered in memory up to CHUNK_BYTES, then saved as a chunk file in the
    staging folder; `finish` joins the chunks into {split}_images.npy and {split}_masks.npy,
    streaming, so that no split is ever held in memory whole."""

    def __init__(self, folder: Path, split: str, num_classes: int):
        self.folder, self.split = folder, split
        self.manifest = open(self._part("manifest", 0, "csv"), "w", newline="")
        self.rows = csv.writer(self.manifest, lineterminator="\n")
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.buffered = self.chunks = 0
        self.count = self.pixels = 0
        self.class_pixels = np.zeros(num_classes, np.int64)  # void left out

    def add(self, tile: Sample) -> int:
        """Keep one tile, and its row of manifest.csv."""
        self.rows.writerow([tile.stem, self.split, self.count, tile.image_path, tile.mask_path])
        self.images.append(np.ascontiguousarray(tile.image.transpose(2, 0, 1)))  # copies: no view keeps
        self.masks.append(np.array(tile.mask))  # the whole source image alive
        self.buffered += tile.image.nbytes + tile.mask.nbytes
        self.class_pixels = self.class_pixels + np.bincount(tile.mask[tile.mask != VOID],
                                                            minlength=len(self.class_pixels))
        self.pixels += tile.mask.size
        self.count += 1
        if self.buffered >= CHUNK_BYTES:
            self._flush()

    def finish(self, manifest) -> None:
        """Join the chunks into the split's two arrays; append the split's rows to `manifest`."""
        self._flush()
        for kind in ("images", "masks"):
            join_npy([self._part(kind, i) for i in range(self.chunks)], self.folder / f"{self.split}_{kind}.npy")
        self.manifest.close()
        with open(self._part("manifest", 0, "csv")) as rows:
            shutil.copyfileobj(rows, manifest)
        self._part("manifest", 0, "csv").unlink()

    def _flush(self) -> None:
        if not self.images:
            return
        np.save(self._part("images", self.chunks), np.stack(self.images))
        np.save(self._part("masks", self.chunks), np.stack(self.masks))
        self.chunks += 1
        self.images, self.masks, self.buffered = [], [], 0

    def _part(self, kind: str, number: int, suffix: str = "npy") -> Path:
        return self.folder / f".{self.split}_{kind}_{number:05d}.{suffix}"


CHUNK_BYTES = 64 * 2**20  # tiles held before they are saved: the part of prepare's memory that tiles take
COPY_BYTES = 16 * 2**20


def join_npy(parts: list[Path], target: Path) -> None:
    """The arrays of the .npy files `parts` (same dtype and trailing shape), concatenated along their
    first axis into `target`, copied a buffer at a time; the parts are removed."""
    if len(parts) == 1:
        parts[0].rename(target)
        return
    headers = [_npy_header(part) for part in parts]
    shape = (sum(h[0][0] for h in headers), *headers[0][0][1:])
    with open(target, "wb") as out:
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(headers[0][1]),
                                                   "fortran_order": False, "shape": shape})
        for part, (_, _, offset) in zip(parts, headers):
            with open(part, "rb") as source:
                source.seek(offset)
                shutil.copyfileobj(source, out, COPY_BYTES)
            part.unlink()


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, where the data start) of a C-ordered .npy file."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(file)
        return shape, dtype, file.tell()


class FullSizeWriter:
    """images/NNNNN.png and masks/NNNNN.png (class ids) of the test images at their own size, written
    as they come, and their stems in stems.txt."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        self.stems: list[str] = []

    @property
    def count(self) -> int:
        return len(self.stems)

    def add(self, sample: Sample) -> None:
        image = sample.image[..., 0] if sample.image.shape[2] == 1 else sample.image
        Image.fromarray(image).save(self.folder / "images" / f"{self.count:05d}.png")
        Image.fromarray(sample.mask).save(self.folder / "masks" / f"{self.count:05d}.png")
        self.stems.append(sample.stem)

    def finish(self) -> None:
        (self.folder / "stems.txt").write_text("".join(f"{stem}\n" for stem in self.stems))


def _check_usable(cfg: DataConfig, reader: SourceReader, counts: dict[str, int]) -> None:
    if reader.problems and (cfg.on_error == "fail" or not any(counts.values())):
        advice = (
            "Fix or remove them, or set data.on_error: skip to leave them out (listed in skipped.csv)."
            if cfg.on_error == "fail" else "No usable pair is left."
        )
        raise DataError(
            f"{len(reader.problems)} file(s) in {reader.folder} cannot be used:\n"
            f"{describe_problems(reader.folder, reader.problems)}\n{advice}"
        )
    empty = [name for name, count in counts.items() if not count]
    if empty:
        raise DataError(
            f"split(s) {empty} came out empty from {reader.used} usable images:"
            " add images or change data.split"
        )


def _dataset_stats(
    cfg: DataConfig, writers: dict[str, SplitWriter], reader: SourceReader, test_images: int
) -> DatasetStats:
    def frequencies(writer: SplitWriter) -> list[float]:
        return (writer.class_pixels / max(writer.class_pixels.sum(), 1)).round(6).tolist()

    def void_fraction(writer: SplitWriter) -> float:
        return round(float(writer.pixels - writer.class_pixels.sum()) / max(writer.pixels, 1), 6)

    return DatasetStats(
        source=cfg.source,
        class_names=cfg.class_names,
        num_classes=cfg.num_classes,
        channels=cfg.channels,
        image_size=cfg.image_size,
        fit=cfg.fit,
        counts={name: writer.count for name, writer in writers.items()},
        class_frequency={name: frequencies(writer) for name, writer in writers.items()},
        void_fraction=(
            None if cfg.ignore_index is None else {name: void_fraction(writer) for name, writer in writers.items()}
        ),
        skipped_files=len(reader.problems),
        test_images=test_images,
        split_source="split_file" if cfg.split_file else "hash",
        intensity=reader.rule,
        clipped_share=round(reader.clipped / max(reader.pixels, 1), 6),
    )
