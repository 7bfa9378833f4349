"""Drawing images from a folder of masks with an exported image generator: `ganseg generate`.

The output is a dataset folder that `data.source` accepts with the same data settings:
images/<stem>_<k>.png drawn from the mask, beside masks/<stem>_<k>.<ext>, a copy of the mask file
itself (so its format is the one the settings already read).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ganseg.contracts import ImagegenCard
from ganseg.data.sources import (
    DEFAULT_MAX_PIXELS,
    BadFileError,
    decode_mask,
    image_files,
)
from ganseg.data.void import VOID
from ganseg.devices import inference_device
from ganseg.errors import DataError
from ganseg.fileio import atomic_dir, png_bytes
from ganseg.imagegen.export import load_image_generator
from ganseg.imagegen.training import sample


def generate_folder(model_dir: str | Path, masks_dir: Path, output_dir: Path, samples: int = 1, seed: int = 0,
                    max_image_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """`samples` images per mask of `masks_dir`; unreadable masks are reported and skipped. Nothing
    appears at `output_dir` until every mask is done; an existing non-empty folder is refused."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise DataError(f"{output_dir} already holds files: choose a new folder, or remove it first")
    generator, card = load_image_generator(model_dir)
    generator = generator.to(inference_device())
    reader = card.mask_reader(max_image_pixels)
    files = image_files(Path(masks_dir), "masks")
    noise = torch.Generator().manual_seed(seed)
    failed: dict[str, str] = {}
    with atomic_dir(output_dir) as staging:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        for path in tqdm(files, desc="generate", unit="mask"):
            try:
                ids = decode_mask(path, reader)
            except BadFileError as err:
                failed[path.name] = err.reason
                continue
            for k, image in enumerate(drawn_images(generator, card, ids, samples, noise)):
                (staging / "images" / f"{path.stem}_{k}.png").write_bytes(png_bytes(image))
                shutil.copyfile(path, staging / "masks" / f"{path.stem}_{k}{path.suffix}")
    for name, reason in failed.items():
        print(f"skipped {name}: {reason}")
    return {"masks": len(files) - len(failed), "images": (len(files) - len(failed)) * samples, "failed": failed}


def generate_encoded(generator: torch.nn.Module, card: ImagegenCard, mask: bytes, samples: int = 1, seed: int = 0,
                     max_image_pixels: int = DEFAULT_MAX_PIXELS) -> list[bytes]:
    """`samples` image PNGs drawn from one encoded mask (a file in the format the card's data
    settings read); the same seed draws the same images. BadFileError says why a mask cannot be used."""
    ids = decode_mask(io.BytesIO(mask), card.mask_reader(max_image_pixels))
    noise = torch.Generator().manual_seed(seed)
    return [png_bytes(image) for image in drawn_images(generator, card, ids, samples, noise)]


def drawn_images(generator: torch.nn.Module, card: ImagegenCard, ids: np.ndarray, samples: int,
                 noise: torch.Generator) -> list[np.ndarray]:
    """`samples` images for one mask of class ids, each from its own seed taken from `noise`."""
    seeds = [int(torch.randint(2**31, (1,), generator=noise)) for _ in range(samples)]
    return [draw(generator, ids, card.num_classes, card.imagegen.depth, seed) for seed in seeds]


def example_mask(card: ImagegenCard) -> np.ndarray:
    """A mask of the card's size and format, all of the first class: an input example."""
    size = (card.image_size, card.image_size)
    if card.mask_format != "rgb":
        return np.zeros(size, np.uint8)
    colour = next(key for key, class_id in sorted(card.palette.items(), key=lambda item: item[1]))
    return np.broadcast_to(np.array([int(c) for c in colour.split(",")], np.uint8), (*size, 3)).copy()


def draw(generator: torch.nn.Module, ids: np.ndarray, num_classes: int, depth: int, seed: int) -> np.ndarray:
    """One image (H, W) or (H, W, 3) uint8 for a mask of any size: padded with void to a multiple of
    2**depth for the generator, cropped back."""
    h, w = ids.shape
    step = 2**depth
    mask = torch.from_numpy(ids.astype(np.int64))[None]
    mask = F.pad(mask, (0, -w % step, 0, -h % step), value=VOID)
    image = sample(generator, mask, num_classes, seed)[0, :, :h, :w]
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
