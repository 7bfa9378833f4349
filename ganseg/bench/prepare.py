"""How prepare scales with the number of images: the folders of synthetic image/mask PNG pairs that
`ganseg bench prepare` (pipeline/ray/data_bench.py) prepares, and its arguments.

The folders hold copies of a few distinct pairs: drawing thousands of synthetic images would take
longer than preparing them, and prepare decodes every file whatever it holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ganseg.data.synthetic import generate_sample
from ganseg.errors import ParamsError


def parse_counts(text: str) -> list[int]:
    """"1000,4000" -> [1000, 4000]."""
    counts = []
    for item in text.split(","):
        if not item.strip().isdigit() or int(item) < 50:
            raise ParamsError("--images takes numbers of at least 50 images (every split needs some),"
                              f" comma-separated, not {item.strip()!r}")
        counts.append(int(item))
    return counts


DISTINCT_PAIRS = 8


def write_folder(folder: Path, count: int, size: int, seed: int = 0) -> int:
    """`count` grey image / class-id mask PNG pairs of size x size in folder/images and folder/masks:
    copies of DISTINCT_PAIRS pairs drawn like the built-in synthetic tissue; the bytes written."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(min(count, DISTINCT_PAIRS)):
        image, mask = generate_sample(seed, index, size)
        Image.fromarray(image).save(folder / "images" / f"{index:06d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{index:06d}.png")
    for index in tqdm(range(DISTINCT_PAIRS, count), desc="write images", unit="img", leave=False):
        for sub in ("images", "masks"):
            shutil.copyfile(folder / sub / f"{index % DISTINCT_PAIRS:06d}.png", folder / sub / f"{index:06d}.png")
    return sum(path.stat().st_size for path in folder.rglob("*.png"))


def parse_cpus(text: str, option: str = "--cpus") -> list[int]:
    """"1,2" -> [1, 2]: numbers of CPUs (or of one-CPU workers) for the Ray Data runs, at most the
    CPUs this process may use."""
    available = len(os.sched_getaffinity(0))
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not all(item.isdigit() and 1 <= int(item) <= available for item in items):
        raise ParamsError(f"{option} takes numbers from 1 to {available} (this machine's CPUs), comma-separated,"
                          f" not {text!r}")
    return sorted({int(item) for item in items})


def memory_growth(rows: list[dict]) -> float:
    """MB of peak memory per thousand more images, between the smallest and the largest count."""
    first, last = rows[0], rows[-1]
    if last["images"] == first["images"]:
        return float("nan")
    return (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["images"] - first["images"]) * 1000
