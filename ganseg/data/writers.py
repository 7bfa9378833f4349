"""The files of a prepared folder, written a block at a time and joined at the end.

Each block of pairs saves its tiles as chunk files and its test images under names that carry
the block's number; `join_blocks` turns them, in block order, into {split}_images.npy,
{split}_masks.npy, manifest.csv and test_full/, copying a buffer at a time so that no split is
ever held in memory whole.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

import numpy as np
from PIL import Image

from ganseg.contracts import FULL_TEST_DIR
from ganseg.data.sources import Sample
from ganseg.data.splits import SPLITS
from ganseg.data.void import VOID

CHUNK_BYTES = 64 * 2**20  # tiles held before they are saved: the part of a block's memory that tiles take
COPY_BYTES = 16 * 2**20


@dataclass
class SplitPart:
    """What one block added to one split."""

    count: int
    pixels: int
    class_pixels: np.ndarray  # void left out
    chunks: int


class SplitWriter:
    """One block's tiles of one split: gathered in memory up to CHUNK_BYTES, then saved as a chunk
    file in the staging folder, with their manifest rows (numbered within the block) beside them."""

    def __init__(self, folder: Path, split: str, block: int, num_classes: int):
        self.folder, self.split, self.block = folder, split, block
        self.manifest = open(manifest_part(folder, split, block), "w", newline="")
        self.rows = csv.writer(self.manifest, lineterminator="\n")
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.buffered = self.chunks = 0
        self.count = self.pixels = 0
        self.class_pixels = np.zeros(num_classes, np.int64)

    def add(self, tile: Sample) -> None:
        """Keep one tile, and its manifest row."""
        self.rows.writerow([tile.stem, self.split, self.count, tile.image_path, tile.mask_path])
        self.images.append(np.ascontiguousarray(tile.image.transpose(2, 0, 1)))  # copies: no view keeps
        self.masks.append(np.array(tile.mask))  # the whole source image alive
        self.buffered += tile.image.nbytes + tile.mask.nbytes
        self.class_pixels += np.bincount(tile.mask[tile.mask != VOID], minlength=len(self.class_pixels))
        self.pixels += tile.mask.size
        self.count += 1
        if self.buffered >= CHUNK_BYTES:
            self._flush()

    def close(self) -> SplitPart:
        self._flush()
        self.manifest.close()
        return SplitPart(self.count, self.pixels, self.class_pixels, self.chunks)

    def _flush(self) -> None:
        if not self.images:
            return
        for kind, arrays in (("images", self.images), ("masks", self.masks)):
            np.save(chunk_path(self.folder, self.split, kind, self.block, self.chunks), np.stack(arrays))
        self.chunks += 1
        self.images, self.masks, self.buffered = [], [], 0


def chunk_path(folder: Path, split: str, kind: str, block: int, number: int) -> Path:
    return folder / f".{split}_{kind}_{block:05d}_{number:03d}.npy"


def manifest_part(folder: Path, split: str, block: int) -> Path:
    return folder / f".{split}_manifest_{block:05d}.csv"


class FullSizeWriter:
    """One block's test images and masks (class ids) at their own size, as PNGs named by the block."""

    def __init__(self, staging: Path, block: int):
        self.folder, self.block = staging / FULL_TEST_DIR, block
        self.stems: list[str] = []

    def add(self, sample: Sample) -> None:
        image = sample.image[..., 0] if sample.image.shape[2] == 1 else sample.image
        name = full_size_part(self.block, len(self.stems))
        Image.fromarray(image).save(self.folder / "images" / name)
        Image.fromarray(sample.mask).save(self.folder / "masks" / name)
        self.stems.append(sample.stem)


def full_size_part(block: int, number: int) -> str:
    return f".{block:05d}_{number:04d}.png"


def make_folders(staging: Path) -> None:
    (staging / FULL_TEST_DIR / "images").mkdir(parents=True)
    (staging / FULL_TEST_DIR / "masks").mkdir()


def join_blocks(staging: Path, parts: Sequence[dict[str, SplitPart]], test_stems: Sequence[list[str]]) -> None:
    """The blocks' files, in block order, joined into the prepared folder's arrays, manifest.csv and
    test_full/ (images/NNNNN.png, masks/NNNNN.png and stems.txt); the parts are removed."""
    with open(staging / "manifest.csv", "w", newline="") as manifest:
        manifest.write("stem,split,index,image_file,mask_file\n")
        for split in SPLITS:
            for kind in ("images", "masks"):
                chunks = [chunk_path(staging, split, kind, block, number)
                          for block, part in enumerate(parts) for number in range(part[split].chunks)]
                join_npy(chunks, staging / f"{split}_{kind}.npy")
            _join_manifest(staging, split, [part[split].count for part in parts], manifest)
    _join_full_size(staging / FULL_TEST_DIR, test_stems)


def _join_manifest(staging: Path, split: str, counts: list[int], out: IO[str]) -> None:
    rows, offset = csv.writer(out, lineterminator="\n"), 0
    for block, count in enumerate(counts):
        path = manifest_part(staging, split, block)
        with open(path, newline="") as part:
            for stem, split_name, index, image_file, mask_file in csv.reader(part):
                rows.writerow([stem, split_name, offset + int(index), image_file, mask_file])
        path.unlink()
        offset += count


def _join_full_size(folder: Path, test_stems: Sequence[list[str]]) -> None:
    number = 0
    for block, stems in enumerate(test_stems):
        for within in range(len(stems)):
            for kind in ("images", "masks"):
                (folder / kind / full_size_part(block, within)).rename(folder / kind / f"{number:05d}.png")
            number += 1
    (folder / "stems.txt").write_text("".join(f"{stem}\n" for stems in test_stems for stem in stems))


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
