"""Datasets: reading a user's folder or the synthetic default, and the prepared arrays.

Prepared layout (one folder, a DVC output):
  {split}_images.npy  uint8 (N, C, H, W)     {split}_masks.npy  uint8 (N, H, W) class ids
  manifest.csv        one row per tile: stem, split, index, source files, original size
  stats.json          class names, counts per split, per-class pixel frequencies, files skipped
  skipped.csv         file, reason: every source file left out (data.on_error: skip); header only if none
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ganseg import synthetic
from ganseg.config import DataConfig
from ganseg.contracts import DatasetStats, read_dataset_stats, write_dataset_stats
from ganseg.errors import DataError
from ganseg.fileio import atomic_dir
from ganseg.intensity import IntensityRule, is_eight_bit, map_to_uint8, resolve
from ganseg.splits import SPLITS, assign_splits, split_of  # noqa: F401  (split_of: part of this module's API)
from ganseg.void import VOID

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS: int = DataConfig.model_fields["max_image_pixels"].default
SKIPPED_REPORT = "skipped.csv"


@dataclass
class Sample:
    stem: str
    image: np.ndarray  # (H, W, C) uint8
    mask: np.ndarray  # (H, W) uint8 class ids
    image_path: str = ""
    mask_path: str = ""


@dataclass(frozen=True)
class Problem:
    """One file that cannot be used, and why."""

    file: Path
    reason: str


class BadFileError(DataError):
    """One image or mask file cannot be used; `reason` says why without repeating the path."""

    def __init__(self, path: Path, reason: str):
        super().__init__(path, reason)  # both in args, so the error pickles back whole
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FolderScan:
    """What a dataset folder holds: the usable (stem, image, mask) pairs and every file that is not."""

    pairs: list[tuple[str, Path, Path]]
    problems: list[Problem]


def scan_folder(folder: Path) -> FolderScan:
    """Pair images/ and masks/ by file stem; anything unpaired, ambiguous or not an image is a problem."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    inside = folder.resolve()
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise DataError(f"{folder}: expected sub-folders images/ and masks/; {needed.name}/ is missing")
        if not needed.resolve().is_relative_to(inside):
            raise DataError(f"{needed}: links to {needed.resolve()}, outside the dataset folder {inside}")
    images, problems = _candidates(images_dir, inside)
    masks, mask_problems = _candidates(masks_dir, inside)
    problems += mask_problems
    if not images and not masks and not problems:
        raise DataError(f"{folder}: images/ and masks/ are empty (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    pairs = []
    for stem in sorted(images.keys() | masks.keys()):
        found_images, found_masks = images.get(stem, []), masks.get(stem, [])
        problems += _stem_problems(stem, found_images, "images", found_masks, "masks")
        problems += _stem_problems(stem, found_masks, "masks", found_images, "images")
        if len(found_images) == 1 and len(found_masks) == 1:
            pairs.append((stem, found_images[0], found_masks[0]))
    return FolderScan(pairs, problems)


def _candidates(folder: Path, inside: Path) -> tuple[dict[str, list[Path]], list[Problem]]:
    """Image files of `folder` grouped by stem; every other entry (hidden files aside) is a problem."""
    by_stem: dict[str, list[Path]] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        reason = _entry_problem(path, inside)
        if reason:
            problems.append(Problem(path, reason))
        else:
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem, problems


def _entry_problem(path: Path, inside: Path) -> str | None:
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(inside):
            return f"symlink to {target}, outside the dataset folder {inside}"
        if not target.exists():
            return f"broken symlink (to {target})"
    if path.is_dir():
        return "a folder; images/ and masks/ must hold the files themselves"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})"
    return None


def _stem_problems(stem: str, found: list[Path], kind: str, partners: list[Path], partner_kind: str) -> list[Problem]:
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        return [Problem(p, f"{len(found)} files in {kind}/ share the stem {stem!r} ({names}); keep one") for p in found]
    if found and not partners:
        return [Problem(found[0], f"no usable file with stem {stem!r} in {partner_kind}/")]
    return []


@contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Pillow refuses images over `max_pixels`; its warning zone (up to twice that) is refused too."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@contextmanager
def open_image(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """The fully decoded image; BadFileError, with the reason, if it cannot be decoded."""
    with _decoded(path, max_pixels) as img:
        yield img


def _decoded(path: Path, max_pixels: int) -> Image.Image:
    img = None
    with pixel_limit(max_pixels):
        try:
            img = Image.open(path)
            img.load()  # Image.open reads only the header: a truncated file fails here
            # Viewers and annotation tools show a photo turned by its EXIF orientation; so do we.
            ImageOps.exif_transpose(img, in_place=True)
            return img
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            reason = (
                f"{_header_size(path)} pixels, over data.max_image_pixels = {max_pixels:,} (a decompression-bomb guard)"
            )
        except UnidentifiedImageError:
            reason = "not an image that can be read (unknown or damaged format)"
        except (OSError, SyntaxError, ValueError, EOFError) as err:  # what Pillow raises for damaged data
            reason = _unreadable_reason(err)
    if img is not None:
        img.close()
    raise BadFileError(path, reason)


def _unreadable_reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.errno is not None:  # the file system's refusal, not the data's
        return f"cannot be read: {err.strerror}"
    return f"damaged or truncated image ({err})"


def _header_size(path: Path) -> str:
    """'W x H = N' from the header alone (no pixel data is decoded)."""
    with pixel_limit(None), Image.open(path) as img:
        width, height = img.size
    return f"{width}x{height} = {width * height:,}"


def read_image(path: Path, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, C) at the file's full depth (uint8, uint16, int32 or float32); BadFileError if it cannot be decoded.

    Greyscale images of more than 8 bits keep their values (and are repeated for 3 channels);
    8-bit images are converted by Pillow to grey or RGB. Pillow reads colour images at 8 bits per channel.
    """
    with open_image(path, max_pixels) as img:
        if is_eight_bit(img.mode):
            array = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        else:
            array = np.array(img)
            array = array.astype(array.dtype.newbyteorder("="))  # big-endian 16-bit TIFFs to native order
    if array.ndim == 2:
        array = array[..., None]
    return np.repeat(array, 3, axis=2) if channels == 3 and array.shape[2] == 1 else array


def read_model_input(
    path: Path, channels: int, rule: IntensityRule, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, int]:
    """(H, W, C) uint8 as the network sees it, by the intensity rule; and how many values were clipped."""
    return map_to_uint8(read_image(path, channels, max_pixels), rule)


def image_is_eight_bit(path: Path) -> bool:
    """From the header alone; a file that cannot be opened counts as 8-bit (prepare reports it later)."""
    try:
        with pixel_limit(None), Image.open(path) as img:
            return is_eight_bit(img.mode)
    except (OSError, SyntaxError, ValueError):
        return True


def decode_mask(path: Path, cfg: DataConfig) -> np.ndarray:
    """Class ids (H, W) from a mask file in the configured format; BadFileError says what is wrong."""
    with open_image(path, cfg.max_image_pixels) as img:
        try:
            return mask_to_ids(img, cfg)
        except ValueError as err:
            raise BadFileError(path, str(err)) from None


def mask_to_ids(img: Image.Image, cfg: DataConfig) -> np.ndarray:
    """Class ids (H, W) uint8 from a mask image, VOID where it holds data.ignore_index;
    ValueError for values the class map does not know."""
    if cfg.mask_format == "rgb":
        return _rgb_to_ids(np.asarray(img.convert("RGB")), cfg)
    if img.mode in ("RGB", "RGBA"):
        raise ValueError(f"mask is {img.mode}; set data.mask_format: rgb with a palette")
    keep_values = img.mode == "P" or img.mode.startswith("I")  # palette indices or 16/32-bit ids, unscaled
    values = np.asarray(img if keep_values else img.convert("L")).astype(np.int64)
    void = values == cfg.ignore_index if cfg.ignore_index is not None else np.zeros(values.shape, bool)
    if cfg.mask_format == "binary":
        ids = (values >= 128).astype(np.uint8)  # tolerant of JPEG noise around 0 and 255
    else:
        ids = _checked_ids(values, void, cfg)
    ids[void] = VOID
    return ids


def _checked_ids(values: np.ndarray, void: np.ndarray, cfg: DataConfig) -> np.ndarray:
    unknown = np.unique(values[((values < 0) | (values >= cfg.num_classes)) & ~void])
    if unknown.size:
        void_note = "" if cfg.ignore_index is None else f" nor data.ignore_index {cfg.ignore_index}"
        raise ValueError(
            f"mask values {unknown[:8].tolist()} are not class ids 0..{cfg.num_classes - 1}{void_note}"
            " (binary 0/255 masks need data.mask_format: binary)"
        )
    return np.where(void, 0, values).astype(np.uint8)


def _rgb_to_ids(rgb: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Palette colours to class ids; a colour mapped to data.ignore_index becomes VOID."""
    mask = np.zeros(rgb.shape[:2], np.uint8)
    known = np.zeros(rgb.shape[:2], bool)
    for key, class_id in cfg.palette.items():
        colour = np.array([int(c) for c in key.split(",")], np.uint8)
        hit = (rgb == colour).all(axis=-1)
        mask[hit] = VOID if class_id == cfg.ignore_index else class_id
        known |= hit
    if not known.all():
        unknown = np.unique(rgb[~known].reshape(-1, 3), axis=0)[:5]
        raise ValueError(f"mask colours {[tuple(c) for c in unknown.tolist()]} are not in data.palette")
    return mask


def load_pair(
    stem: str, image_path: Path, mask_path: Path, cfg: DataConfig, rule: IntensityRule
) -> tuple[Sample | None, list[Problem], int]:
    """The decoded pair (image mapped by `rule`), or None and what is wrong with either file (both are
    tried); and how many image values the rule clipped."""
    image = mask = None
    problems, clipped = [], 0
    try:
        image, clipped = read_model_input(image_path, cfg.channels, rule, cfg.max_image_pixels)
    except BadFileError as err:
        problems.append(Problem(err.path, err.reason))
    try:
        mask = decode_mask(mask_path, cfg)
    except BadFileError as err:
        problems.append(Problem(err.path, err.reason))
    if image is not None and mask is not None and image.shape[:2] != mask.shape:
        sizes = f"image is {_size(image.shape)} but its mask {mask_path.name} is {_size(mask.shape)}"
        problems.append(Problem(image_path, sizes))
    if problems:
        return None, problems, 0
    return Sample(stem, image, mask, str(image_path), str(mask_path)), [], clipped


def _size(shape: tuple) -> str:
    return f"{shape[1]}x{shape[0]} px"


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
        eight_bit = all(image_is_eight_bit(image) for _, image, _ in self.pairs)
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


def source_folder(cfg: DataConfig) -> Path:
    folder = Path(cfg.source).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.source {cfg.source!r} is neither 'synthetic' nor an existing folder")
    return folder


def describe_problems(folder: Path, problems: list[Problem]) -> str:
    """One line per unusable file, its path relative to the dataset folder."""
    return "\n".join(f"  {_relative(p.file, folder)}: {p.reason}" for p in problems)


def _relative(path: Path, folder: Path) -> Path:
    return path.relative_to(folder) if path.is_relative_to(folder) else path


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


def _dataset_stats(cfg: DataConfig, tiles: dict[str, list[Sample]], reader: SourceReader, test_images: int) -> DatasetStats:
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
        void_fraction=None if cfg.ignore_index is None else {name: void_fraction(items) for name, items in tiles.items()},
        skipped_files=len(reader.problems),
        test_images=test_images,
        split_source="split_file" if cfg.split_file else "hash",
        intensity=reader.rule,
        clipped_share=round(reader.clipped / max(reader.pixels, 1), 6),
    )


FULL_TEST_DIR = "test_full"


def _save_full_size(samples: list[Sample], folder: Path) -> None:
    """images/NNNNN.png and masks/NNNNN.png (class ids), in the order of the stems in stems.txt."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, sample in enumerate(samples):
        image = sample.image[..., 0] if sample.image.shape[2] == 1 else sample.image
        Image.fromarray(image).save(folder / "images" / f"{i:05d}.png")
        Image.fromarray(sample.mask).save(folder / "masks" / f"{i:05d}.png")
    (folder / "stems.txt").write_text("".join(f"{s.stem}\n" for s in samples))


def full_size_test(data_dir: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image (H, W, C) uint8, mask (H, W) uint8) of every test image at its own size."""
    folder = Path(data_dir) / FULL_TEST_DIR
    if not folder.is_dir():
        raise DataError(f"{data_dir} has no {FULL_TEST_DIR}/ (prepared by an older ganseg): run `ganseg prepare` again")
    for image_path in sorted((folder / "images").glob("*.png")):
        image = np.array(Image.open(image_path))
        yield (image[..., None] if image.ndim == 2 else image), np.array(Image.open(folder / "masks" / image_path.name))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the generator's input range."""
    return images.float().div(127.5).sub(1.0)


class PreparedSplit(torch.utils.data.Dataset):
    """One split of a prepared folder, memory-mapped; yields (uint8 image, int64 mask).

    `transform(image, mask) -> (image, mask)` is applied to every item (training augmentation).
    """

    def __init__(self, data_dir: str | Path, split: str, transform=None):
        data_dir = Path(data_dir)
        read_dataset_stats(data_dir)
        self.images = np.load(data_dir / f"{split}_images.npy", mmap_mode="r")
        self.masks = np.load(data_dir / f"{split}_masks.npy", mmap_mode="r")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[index]))
        mask = torch.from_numpy(np.array(self.masks[index])).long()
        return self.transform(image, mask) if self.transform else (image, mask)


def labelled_split(data_dir: str | Path, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training-tile indices (labelled, unlabelled): whole source images, a seeded `fraction` of them
    (at least one) keep their masks; the tiles of the rest are used as images only."""
    manifest = pd.read_csv(Path(data_dir) / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    stems = sorted(train["stem"].astype(str).unique())
    if fraction >= 1:
        return train["index"].tolist(), []
    order = np.random.default_rng(seed).permutation(len(stems))
    kept = {stems[i] for i in order[: max(1, round(fraction * len(stems)))]}
    is_labelled = train["stem"].astype(str).isin(kept)
    return train.loc[is_labelled, "index"].tolist(), train.loc[~is_labelled, "index"].tolist()


class ImagesOnly(torch.utils.data.Dataset):
    """The images of a dataset of (image, mask) pairs, masks dropped (the semi-supervised unlabelled set)."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[index][0]


def endless(loader) -> Iterator:
    """Batches of `loader`, pass after pass (reshuffled each pass when the loader shuffles)."""
    while True:
        yield from loader
