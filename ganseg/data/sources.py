"""A user's dataset folder: images/ paired with masks/ by file stem, images decoded at their full
depth (turned by their EXIF orientation), masks decoded to class ids in the configured format
(VOID where nobody annotated). A file that cannot be used becomes a Problem that says why.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ganseg.config import DataConfig, PreprocessConfig
from ganseg.data.intensity import IntensityRule, is_eight_bit, map_to_uint8
from ganseg.data.preprocess import equalised
from ganseg.data.void import VOID
from ganseg.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS: int = DataConfig.model_fields["max_image_pixels"].default


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


def image_files(folder: Path, what: str = "images") -> list[Path]:
    """The image files directly in `folder`, sorted; FileNotFoundError when it is no folder or holds none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder} holds no {what} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_image(path: Path, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS, grey: str = "luminance") -> np.ndarray:
    """(H, W, C) at the file's full depth (uint8, uint16, int32 or float32); BadFileError if it cannot be decoded.

    Greyscale images of more than 8 bits keep their values (and are repeated for 3 channels);
    8-bit images are converted by Pillow to grey (its luminance, or with `grey` "green" its green
    channel) or RGB. Pillow reads colour images at 8 bits per channel.
    """
    with open_image(path, max_pixels) as img:
        if is_eight_bit(img.mode) and channels == 1 and grey == "green":
            array = np.array(img.convert("RGB"), dtype=np.uint8)[..., 1]
        elif is_eight_bit(img.mode):
            array = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        else:
            array = np.array(img)
            array = array.astype(array.dtype.newbyteorder("="))  # big-endian 16-bit TIFFs to native order
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] not in (1, channels):
        raise BadFileError(path, f"{array.shape[2]} channels of {array.dtype}; the model takes {channels}")
    return np.repeat(array, 3, axis=2) if channels == 3 and array.shape[2] == 1 else array


def read_model_input(
    path: Path, channels: int, rule: IntensityRule, max_pixels: int = DEFAULT_MAX_PIXELS,
    preprocess: PreprocessConfig | None = None,
) -> tuple[np.ndarray, int]:
    """(H, W, C) uint8 as the network sees it, by the intensity rule and `data.preprocess`; and how many
    values the rule clipped."""
    grey = preprocess.grey if preprocess else "luminance"
    image, clipped = map_to_uint8(read_image(path, channels, max_pixels, grey), rule)
    return equalised(image, preprocess), clipped


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
            " (binary 0/255 masks need data.mask_format: binary; a value that marks unannotated pixels,"
            " often 255, needs data.ignore_index)"
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
        image, clipped = read_model_input(image_path, cfg.channels, rule, cfg.max_image_pixels, cfg.preprocess)
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


def source_path(cfg: DataConfig, root: Path = Path(".")) -> Path:
    """Where data.source points; a relative one is read from `root`."""
    return root / Path(cfg.source).expanduser()


def source_folder(cfg: DataConfig, root: Path = Path(".")) -> Path:
    """The data.source folder, which must exist."""
    folder = source_path(cfg, root)
    if not folder.is_dir():
        raise DataError(f"data.source {cfg.source!r} is not an existing folder (the built-in data, data/synthetic,"
                        " is written by `ganseg synthesize`, the first stage of `dvc repro`)")
    return folder


def describe_problems(folder: Path, problems: list[Problem]) -> str:
    """One line per unusable file, its path relative to the dataset folder."""
    return "\n".join(f"  {_relative(p.file, folder)}: {p.reason}" for p in problems)


def _relative(path: Path, folder: Path) -> Path:
    return path.relative_to(folder) if path.is_relative_to(folder) else path
