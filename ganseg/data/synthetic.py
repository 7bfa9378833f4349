"""The built-in dataset: procedurally drawn cell tissue, deterministic by seed, made offline and
written as an ordinary dataset folder (images/ + masks/), which prepare reads like a user's.

Each image shows packed cells (a warped Voronoi tiling) whose thin dark walls are the
`membrane` class, with dark round `organelle` blobs inside some cells, on textured, blurred,
noisy cytoplasm. Membranes and organelles have similar grey levels, so a segmenter has to
use shape and context, not just intensity, to tell them apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from ganseg.config import SyntheticConfig
from ganseg.fileio import atomic_dir

CLASS_NAMES = ["background", "membrane", "organelle"]


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Noise in [-1, 1] that varies over about size/cells pixels (bicubic upsampled grid)."""
    grid = rng.uniform(0, 255, (cells + 1, cells + 1)).astype(np.uint8)
    big = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 127.5 - 1.0


def draw_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Class ids: 0 cytoplasm, 1 membrane, 2 organelle."""
    n_cells = int(rng.integers(5, 12)) * max(1, (size // 64) ** 2)
    seeds = rng.uniform(0, size, (n_cells, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = size / 32
    yy += warp * smooth_noise(rng, size, 4)
    xx += warp * smooth_noise(rng, size, 4)
    dist = np.sqrt((yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2)
    nearest = np.partition(dist, 1, axis=0)[:2]
    owner = dist.argmin(axis=0)
    thickness = rng.uniform(1.0, 2.0)
    mask = np.zeros((size, size), np.uint8)
    for cell in np.flatnonzero(rng.random(n_cells) < 0.5):
        radius = rng.uniform(0.12, 0.25) * size / np.sqrt(n_cells)
        centre = seeds[cell] + rng.normal(0, radius / 2, 2)
        blob = (yy - centre[0]) ** 2 / rng.uniform(0.6, 1.4) + (xx - centre[1]) ** 2 < radius**2
        mask[blob & (owner == cell)] = 2
    mask[(nearest[1] - nearest[0]) < thickness] = 1
    return mask


def render_image(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Grey uint8 image of the tissue described by `mask`."""
    size = mask.shape[0]
    cytoplasm = rng.uniform(0.55, 0.75)
    image = cytoplasm + 0.08 * smooth_noise(rng, size, 8) + 0.05 * smooth_noise(rng, size, size // 4)
    image[mask == 1] = rng.uniform(0.2, 0.35)
    organelle = mask == 2
    image[organelle] = rng.uniform(0.3, 0.42) + 0.08 * smooth_noise(rng, size, size // 3)[organelle]
    pil = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8))
    image = np.asarray(pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.2))), np.float32) / 255
    image += rng.normal(0, rng.uniform(0.03, 0.07), image.shape)
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
    image = (image - 0.5) * contrast + 0.5 + brightness
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def generate_sample(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair; the same (seed, index, size) always gives the same pair."""
    rng = np.random.default_rng([seed, index])
    mask = draw_mask(rng, size)
    return render_image(rng, mask), mask


def stem(index: int) -> str:
    return f"synth_{index:05d}"


def write_synthetic_dataset(cfg: SyntheticConfig, seed: int, folder: str | Path, progress: bool = True) -> Path:
    """`cfg.num_images` pairs as grey PNG images and class-id PNG masks, replacing `folder` at once."""
    with atomic_dir(folder) as staging:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        for index in tqdm(range(cfg.num_images), desc="synthesize", unit="img", leave=False,
                          disable=not progress):
            image, mask = generate_sample(seed, index, cfg.size)
            Image.fromarray(image).save(staging / "images" / f"{stem(index)}.png")
            Image.fromarray(mask).save(staging / "masks" / f"{stem(index)}.png")
    return Path(folder)
