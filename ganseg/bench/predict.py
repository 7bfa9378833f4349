"""Prediction speed and memory of a model on large images, segmented as its data.fit says (sliding
windows of the tile size, or one pass resized to it): pure PyTorch.

Each case runs in a fresh process: its peak resident memory during the prediction, and that peak
minus the resident memory just before it (model loaded, input image in memory, kernels warmed up on
one small image), i.e. what predicting the image costs on top of holding it. Weights do not change
the speed, so without a model folder the network of params.model is built with fresh weights.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from ganseg.config import Params
from ganseg.errors import ParamsError
from ganseg.memory import peak_mb, reset_peak
from ganseg.segmenter.inference import OVERLAP, WINDOWS_PER_BATCH, segment_image


@dataclass(frozen=True)
class Case:
    size: int  # images are size x size
    count: int
    flips: bool


def parse_cases(sizes: str) -> list[Case]:
    """"512x8,4096x1" -> eight 512 x 512 images, one 4096 x 4096 image: each with flips off, then on."""
    cases = []
    for item in sizes.split(","):
        size, count = size_and_count(item, "--sizes")
        cases += [Case(size, count, False), Case(size, count, True)]
    return cases


def size_and_count(item: str, option: str) -> tuple[int, int]:
    """"512x8" -> (512, 8); ParamsError naming `option` otherwise."""
    size, _, count = item.strip().partition("x")
    if not (size.isdigit() and count.isdigit() and int(size) > 0 and int(count) > 0):
        raise ParamsError(f"{option} takes SIZExCOUNT items such as 512x8, not {item.strip()!r}")
    return int(size), int(count)


def fresh_model_folder(params: Params, folder: Path) -> Path:
    """An exported model folder holding the network of params.model with fresh weights, for the
    data section's channels, classes and tile size."""
    from ganseg.contracts import ModelCard
    from ganseg.segmenter.export import export_model

    segmenter, tile, channels, fit = _network(params, None)
    classes = params.data.num_classes
    card = ModelCard(model=params.model, in_channels=channels, num_classes=classes,
                     class_names=[f"class_{k}" for k in range(classes)], image_size=tile, fit=fit)
    export_model(folder, segmenter.state_dict(), card)
    return folder


def write_images(folder: Path, size: int, count: int, channels: int) -> Path:
    """`count` PNGs of random size x size images in a new `folder`."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(folder / f"image_{k:05d}.png")
    return folder


def _network(params: Params, model_dir: str | None) -> tuple[torch.nn.Module, int, int, str]:
    """(segmenter in eval mode, tile size, channels, fit): the exported model's, or params' with fresh weights."""
    if model_dir:
        from ganseg.segmenter.export import load_model

        segmenter, card = load_model(Path(model_dir))
        return segmenter.eval(), card.image_size, card.in_channels, card.fit
    from ganseg.segmenter.training import build_networks

    segmenter, _ = build_networks(params, params.data.channels, params.data.num_classes)
    return segmenter.eval(), params.data.image_size, params.data.channels, params.data.fit


def measure_case(raw_params: dict, model_dir: str | None, case: Case) -> dict:
    """Seconds, images/s and peak memory of segmenting `case.count` random images (in this process)."""
    params = Params.model_validate(raw_params)
    segmenter, tile, channels, fit = _network(params, model_dir)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (case.size, case.size, channels), dtype=np.uint8) for _ in range(case.count)]
    segment_image(segmenter, images[0][: 2 * tile, : 2 * tile], tile, fit, case.flips)  # warm-up
    before = reset_peak()
    start = time.perf_counter()
    for image in images:
        segment_image(segmenter, image, tile, fit, case.flips)
    seconds = time.perf_counter() - start
    return {
        "size": case.size, "count": case.count, "flips": case.flips, "tile": tile, "fit": fit,
        "seconds": seconds, "images_per_s": case.count / seconds,
        "megapixels_per_s": case.count * case.size**2 / seconds / 1e6,
        "peak_mb": peak_mb(), "peak_extra_mb": peak_mb() - before,
        "threads": torch.get_num_threads(),
    }


def run_cases(params: Params, model_dir: str | None, cases: list[Case]) -> list[dict]:
    """Every case in its own fresh process, one after the other."""
    rows = []
    for case in cases:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            row = pool.submit(measure_case, params.model_dump(), model_dir, case).result()
        rows.append(row)
        print(f"  {case.size}x{case.size} x{case.count}, flips {'on' if case.flips else 'off'}:"
              f" {row['seconds']:.1f} s, peak +{row['peak_extra_mb']:.0f} MB")
    return rows


def window_settings() -> dict:
    return {"overlap": OVERLAP, "windows_per_batch": WINDOWS_PER_BATCH}
