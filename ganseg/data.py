"""Datasets: reading a user's folder or the synthetic default, and the prepared arrays.

Prepared layout (one folder, a DVC output):
  {split}_images.npy  uint8 (N, C, H, W)     {split}_masks.npy  uint8 (N, H, W) class ids
  manifest.csv        one row per tile: stem, split, index, source files, original size
  stats.json          class names, counts per split, per-class pixel frequencies
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from ganseg import synthetic
from ganseg.config import DataConfig, SplitConfig
from ganseg.fileio import atomic_dir, read_json, write_json

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The dataset folder or one of its files cannot be used; the message says which and why."""


@dataclass
class Sample:
    stem: str
    image: np.ndarray  # (H, W, C) uint8
    mask: np.ndarray  # (H, W) uint8 class ids
    image_path: str = ""
    mask_path: str = ""


def split_of(stem: str, split: SplitConfig) -> str:
    """Stable split from a hash of the stem: adding files never moves existing ones."""
    digest = hashlib.sha1(stem.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < split.train:
        return "train"
    return "val" if position < split.train + split.val else "test"


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every stem present in both images/ and masks/."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise DataError(f"{folder}: expected sub-folders images/ and masks/; {needed.name}/ is missing")
    images = _by_stem(images_dir)
    masks = _by_stem(masks_dir)
    problems = [f"{images[s]}: no mask with stem {s!r} in masks/" for s in sorted(images.keys() - masks.keys())]
    problems += [f"{masks[s]}: no image with stem {s!r} in images/" for s in sorted(masks.keys() - images.keys())]
    if problems:
        raise DataError("unpaired files:\n  " + "\n  ".join(problems))
    if not images:
        raise DataError(f"{images_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path.name} share the stem {path.stem!r}")
        found[path.stem] = path
    return found


def read_image(path: Path, channels: int) -> np.ndarray:
    with Image.open(path) as img:
        converted = img.convert("L" if channels == 1 else "RGB")
        array = np.array(converted, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_mask(path: Path, cfg: DataConfig) -> np.ndarray:
    """Class ids (H, W) from a mask file in the configured format."""
    with Image.open(path) as img:
        if cfg.mask_format == "rgb":
            return _decode_rgb(np.asarray(img.convert("RGB")), cfg, path)
        if img.mode in ("RGB", "RGBA"):
            raise DataError(f"{path}: mask is {img.mode}; set data.mask_format: rgb with a palette")
        values = np.asarray(img if img.mode == "P" else img.convert("L"), dtype=np.uint8)
    if cfg.mask_format == "binary":
        return (values >= 128).astype(np.uint8)  # tolerant of JPEG noise around 0 and 255
    too_big = np.unique(values[values >= cfg.num_classes])
    if too_big.size:
        raise DataError(
            f"{path}: mask values {too_big[:8].tolist()} are not class ids 0..{cfg.num_classes - 1}"
            " (binary 0/255 masks need data.mask_format: binary)"
        )
    return values


def _decode_rgb(rgb: np.ndarray, cfg: DataConfig, path: Path) -> np.ndarray:
    mask = np.full(rgb.shape[:2], 255, np.uint8)
    for key, class_id in cfg.palette.items():
        colour = np.array([int(c) for c in key.split(",")], np.uint8)
        mask[(rgb == colour).all(axis=-1)] = class_id
    if (mask == 255).any():
        unknown = np.unique(rgb[mask == 255].reshape(-1, 3), axis=0)[:5]
        raise DataError(f"{path}: colours {[tuple(c) for c in unknown.tolist()]} are not in data.palette")
    return mask


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


def iter_samples(cfg: DataConfig, seed: int) -> Iterator[Sample]:
    if cfg.source == "synthetic":
        for index in range(cfg.synthetic.num_images):
            image, mask = synthetic.generate_sample(seed, index, cfg.synthetic.size)
            image = np.repeat(image[..., None], cfg.channels, axis=2)
            yield Sample(f"synth_{index:05d}", image, mask, "synthetic", "synthetic")
        return
    for stem, image_path, mask_path in find_pairs(source_folder(cfg)):
        image, mask = read_image(image_path, cfg.channels), decode_mask(mask_path, cfg)
        if image.shape[:2] != mask.shape:
            raise DataError(f"{image_path}: image is {image.shape[:2]} but its mask is {mask.shape}")
        yield Sample(stem, image, mask, str(image_path), str(mask_path))


def source_folder(cfg: DataConfig) -> Path:
    folder = Path(cfg.source).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.source {cfg.source!r} is neither 'synthetic' nor an existing folder")
    return folder


def count_sources(cfg: DataConfig) -> int:
    if cfg.source == "synthetic":
        return cfg.synthetic.num_images
    return len(find_pairs(source_folder(cfg)))


def prepare_dataset(cfg: DataConfig, seed: int, out_dir: str | Path, progress: bool = True) -> dict:
    """Read, fit and split every pair, then write the prepared folder in one atomic move."""
    tiles: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    total = count_sources(cfg)
    for sample in tqdm(iter_samples(cfg, seed), total=total, desc="prepare", unit="img", disable=not progress):
        tiles[split_of(sample.stem, cfg.split)].extend(fit_to_size(sample, cfg.image_size, cfg.fit))
    empty = [name for name, items in tiles.items() if not items]
    if empty:
        raise DataError(
            f"split(s) {empty} came out empty from {total} images: add images or change data.split"
        )
    with atomic_dir(out_dir) as staging:
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
        stats = _stats(cfg, tiles)
        write_json(staging / "stats.json", stats)
    return stats


def _stats(cfg: DataConfig, tiles: dict[str, list[Sample]]) -> dict:
    def frequencies(items: list[Sample]) -> list[float]:
        counts = sum(np.bincount(s.mask.ravel(), minlength=cfg.num_classes) for s in items)
        return (counts / counts.sum()).round(6).tolist()

    return {
        "source": cfg.source,
        "class_names": cfg.class_names,
        "num_classes": cfg.num_classes,
        "channels": cfg.channels,
        "image_size": cfg.image_size,
        "counts": {name: len(items) for name, items in tiles.items()},
        "class_frequency": {name: frequencies(items) for name, items in tiles.items()},
    }


def read_stats(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "stats.json"
    if not path.is_file():
        raise DataError(f"{data_dir} is not a prepared dataset (no stats.json): run `ganseg prepare` first")
    return read_json(path)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the generator's input range."""
    return images.float().div(127.5).sub(1.0)


class PreparedSplit(torch.utils.data.Dataset):
    """One split of a prepared folder, memory-mapped; yields (uint8 image, int64 mask)."""

    def __init__(self, data_dir: str | Path, split: str):
        data_dir = Path(data_dir)
        read_stats(data_dir)
        self.images = np.load(data_dir / f"{split}_images.npy", mmap_mode="r")
        self.masks = np.load(data_dir / f"{split}_masks.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[index]))
        mask = torch.from_numpy(np.array(self.masks[index])).long()
        return image, mask
