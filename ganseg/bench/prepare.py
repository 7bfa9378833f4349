"""How prepare scales with the number of images: wall time, peak memory and MB/s of `prepare_dataset`
on a folder of synthetic image/mask PNG pairs that the bench writes itself.

Each size is prepared in a fresh Python process that imports only what prepare needs (not torch);
its peak resident memory is counted from just before prepare starts (ganseg/bench/memory.py). The
folders hold copies of a few distinct pairs: drawing thousands of synthetic images would take
longer than preparing them, and prepare decodes every file whatever it holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ganseg.bench.memory import peak_mb, reset_peak
from ganseg.config import Params
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


def measure(raw_params: dict, source: str, out_dir: str) -> dict:
    """Prepare `source` into `out_dir` in this process: seconds and peak resident memory."""
    from ganseg.data.prepare import prepare_dataset

    params = Params.model_validate(raw_params)
    reset_peak()
    start = time.perf_counter()
    stats = prepare_dataset(params.data.model_copy(update={"source": source}), params.seed, out_dir, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_mb(),
            "tiles": sum(stats.counts.values())}


def run_sizes(params: Params, counts: list[int], size: int, scratch: Path) -> list[dict]:
    """Per image count: a folder written, then prepared in a fresh process; both removed after."""
    rows = []
    for count in counts:
        source, out = scratch / f"source-{count}", scratch / f"prepared-{count}"
        source_bytes = write_folder(source, count, size)
        request = json.dumps({"params": params.model_dump(), "source": str(source), "out": str(out)})
        child = subprocess.run([sys.executable, "-m", "ganseg.bench.prepare", request], capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"prepare of {count} images failed:\n{child.stderr[-2000:]}")
        row = json.loads(child.stdout.strip().splitlines()[-1])
        prepared_bytes = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
        row |= {"images": count, "size": size, "source_mb": source_bytes / 1e6, "prepared_mb": prepared_bytes / 1e6,
                "mb_per_s": source_bytes / 1e6 / row["seconds"]}
        rows.append(row)
        print(f"  {count} images: {row['seconds']:.1f} s, peak {row['peak_rss_mb']:.0f} MB")
        shutil.rmtree(source)
        shutil.rmtree(out)
    return rows


def memory_growth(rows: list[dict]) -> float:
    """MB of peak memory per thousand more images, between the smallest and the largest count."""
    first, last = rows[0], rows[-1]
    if last["images"] == first["images"]:
        return float("nan")
    return (last["peak_rss_mb"] - first["peak_rss_mb"]) / (last["images"] - first["images"]) * 1000


if __name__ == "__main__":  # the fresh process of run_sizes
    job = json.loads(sys.argv[1])
    print(json.dumps(measure(job["params"], job["source"], job["out"])))
