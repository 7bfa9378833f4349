"""prepare's unit of work: a block of consecutive image/mask pairs read, checked, fitted to the tile
size and written as chunk files into the staging folder.

Blocks are independent of each other, so any number of processes (or Ray Data tasks on any node
that sees the staging folder) can prepare them at once; what a block hands back is small: counts,
class pixels and the problems it found. `ganseg.data.writers.join_blocks` then joins the chunks in
block order, which gives the same arrays as reading every pair one after the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ganseg.config import DataConfig
from ganseg.data.intensity import IntensityRule
from ganseg.data.sources import Problem, Sample, load_pair
from ganseg.data.splits import SPLITS
from ganseg.data.writers import FullSizeWriter, SplitPart, SplitWriter

PAIRS_PER_BLOCK = 64  # large enough that a Ray Data task's overhead (~20 ms) is small beside its work


@dataclass(frozen=True)
class Pair:
    """One image/mask pair to read."""

    stem: str
    split: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class BlockTask:
    number: int
    pairs: list[Pair]
    cfg: DataConfig
    seed: int
    rule: IntensityRule
    staging: Path

    def to_dict(self) -> dict:
        """Plain JSON values, for another process to rebuild the task (`from_dict`) without pickle."""
        pairs = [[p.stem, p.split, str(p.image), str(p.mask)] for p in self.pairs]
        return {"number": self.number, "pairs": pairs, "cfg": self.cfg.model_dump(mode="json"), "seed": self.seed,
                "rule": asdict(self.rule), "staging": str(self.staging)}

    @classmethod
    def from_dict(cls, d: dict) -> "BlockTask":
        pairs = [Pair(stem, split, Path(image), Path(mask)) for stem, split, image, mask in d["pairs"]]
        rule = IntensityRule(**(d["rule"] | {"percentiles": tuple(d["rule"]["percentiles"])}))
        return cls(d["number"], pairs, DataConfig.model_validate(d["cfg"]), d["seed"], rule, Path(d["staging"]))


@dataclass
class BlockResult:
    number: int
    parts: dict[str, SplitPart]
    test_stems: list[str]
    problems: list[Problem] = field(default_factory=list)
    used: int = 0
    clipped: int = 0  # image values the intensity rule clipped,
    pixels: int = 0  # of all image values read

    def to_dict(self) -> dict:
        """Plain JSON values, to hand back to the process that joins the blocks (`from_dict`)."""
        parts = {name: asdict(part) | {"class_pixels": part.class_pixels.tolist()} for name, part in self.parts.items()}
        return {"number": self.number, "parts": parts, "test_stems": self.test_stems,
                "problems": [[str(p.file), p.reason] for p in self.problems],
                "used": self.used, "clipped": self.clipped, "pixels": self.pixels}

    @classmethod
    def from_dict(cls, d: dict) -> "BlockResult":
        parts = {name: SplitPart(**(part | {"class_pixels": np.array(part["class_pixels"], np.int64)}))
                 for name, part in d["parts"].items()}
        problems = [Problem(Path(file), reason) for file, reason in d["problems"]]
        return cls(d["number"], parts, d["test_stems"], problems, d["used"], d["clipped"], d["pixels"])


def prepare_block(task: BlockTask) -> BlockResult:
    """Read, check and fit every pair of the block; its tiles go to chunk files of each split and its
    test images to the full-size folder, all named by the block's number."""
    writers = {name: SplitWriter(task.staging, name, task.number, task.cfg.num_classes) for name in SPLITS}
    full_test = FullSizeWriter(task.staging, task.number)
    result = BlockResult(task.number, {}, [])
    for pair in task.pairs:
        sample = _read(pair, task, result)
        if sample is None:
            continue
        stride = task.cfg.tile_stride if pair.split == "train" else None
        for tile in fit_to_size(sample, task.cfg.image_size, task.cfg.fit, stride):
            writers[pair.split].add(tile)
        if pair.split == "test":
            full_test.add(sample)
    result.parts = {name: writer.close() for name, writer in writers.items()}
    result.test_stems = full_test.stems
    return result


def _read(pair: Pair, task: BlockTask, result: BlockResult) -> Sample | None:
    sample, problems, clipped = load_pair(pair.stem, pair.image, pair.mask, task.cfg, task.rule)
    result.problems += problems
    if sample is not None:
        # within the dataset folder: the prepared data does not depend on where the folder lies
        sample.image_path, sample.mask_path = (_within_dataset(path) for path in (pair.image, pair.mask))
        result.used += 1
        result.clipped += clipped
        result.pixels += sample.image.size
    return sample


def _within_dataset(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def fit_to_size(sample: Sample, size: int, mode: str, stride: int | None = None) -> list[Sample]:
    """Resize to size x size, or cut into size x size tiles (images smaller than a tile are resized):
    side by side, or with `stride` every `stride` pixels and flush with the far edges."""
    height, width = sample.mask.shape
    if mode == "resize" or height < size or width < size:
        image = _resize(sample.image, size, Image.BILINEAR)
        mask = _resize(sample.mask, size, Image.NEAREST)
        return [Sample(sample.stem, image, mask, sample.image_path, sample.mask_path)]
    tiles = []
    for top in tile_starts(height, size, stride):
        for left in tile_starts(width, size, stride):
            window = np.s_[top : top + size, left : left + size]
            tiles.append(
                Sample(sample.stem, sample.image[window], sample.mask[window], sample.image_path, sample.mask_path)
            )
    return tiles


def tile_starts(length: int, size: int, stride: int | None) -> list[int]:
    """Where tiles of `size` start along a side of `length` (>= size) pixels: every `size` pixels, the
    remainder left out; or every `stride` pixels plus one flush with the far edge."""
    starts = list(range(0, length - size + 1, stride or size))
    if stride and starts[-1] != length - size:
        starts.append(length - size)
    return starts


def _resize(array: np.ndarray, size: int, resample: int) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    squeeze = array.ndim == 3 and array.shape[2] == 1
    img = Image.fromarray(array[..., 0] if squeeze else array)
    out = np.asarray(img.resize((size, size), resample))
    return out[..., None] if squeeze else out


def make_blocks(pairs: list[Pair], cfg: DataConfig, seed: int, rule: IntensityRule, staging: Path) -> list[BlockTask]:
    return [BlockTask(number, pairs[start : start + PAIRS_PER_BLOCK], cfg, seed, rule, staging)
            for number, start in enumerate(range(0, len(pairs), PAIRS_PER_BLOCK))]
