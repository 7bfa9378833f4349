"""Image values of any bit depth become the network's 8-bit input by one rule, `data.intensity`.

Images are read at their full depth: 8- or 16-bit integers, 32-bit integers or floats. A value is
first divided by its type's range (255 for 8-bit, 65535 for 16- and 32-bit integers, 1 for
floats), then mapped to [0, 1] by the rule and stored as 0..255:

- `dtype`: as divided;
- `fixed`: (x - low) / (high - low), with low and high in the images' own values;
- `image_percentiles`: between the image's own lower and upper percentile;
- `dataset_percentiles`: between the percentiles of all training images, computed once by prepare.

`auto`, the default, is `dtype` when every image is 8-bit and `image_percentiles` (1 and 99.8)
otherwise, so a 16-bit image and its 8-bit twin (the same picture rescaled to 0..255) give the
network the same input to within a grey level. Values that fall outside [0, 1] are clipped, and counted so prepare can report them.
The resolved rule travels in stats.json and the model card (ganseg/contracts.py), so prepare,
evaluate and predict apply exactly the same mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ganseg.config import IntensityConfig

SAMPLE_PIXELS_PER_IMAGE = 65_536  # dataset percentiles: a regular grid of at most this many pixels per image


@dataclass(frozen=True)
class IntensityRule:
    """A resolved rule: `mode` is dtype, fixed, image_percentiles or dataset_percentiles.

    For dataset_percentiles, low and high are in type-range units (0..1); for fixed, in raw values.
    """

    mode: str = "dtype"
    low: float | None = None
    high: float | None = None
    percentiles: tuple[float, float] = (1.0, 99.8)

    def describe(self) -> str:
        lower, upper = self.percentiles
        if self.mode == "fixed":
            return f"fixed range {self.low:g}..{self.high:g}"
        if self.mode == "dataset_percentiles":
            return (f"training-set percentiles {lower:g}-{upper:g}: {self.low:.4g}..{self.high:.4g}"
                    " of the type's range")
        if self.mode == "image_percentiles":
            return f"each image's percentiles {lower:g}-{upper:g}"
        return "the full range of the image's type"


def type_range(array: np.ndarray) -> float:
    if array.dtype == np.uint8:
        return 255.0
    if np.issubdtype(array.dtype, np.integer):
        return 65535.0  # 16-bit data; Pillow reads 16-bit greyscale into 32-bit integers in some formats
    return 1.0


def in_type_range(array: np.ndarray) -> np.ndarray:
    """Float32 values divided by the type's range (8-bit and 16-bit alike become 0..1)."""
    return array.astype(np.float32) / type_range(array)


def map_to_uint8(raw: np.ndarray, rule: IntensityRule) -> tuple[np.ndarray, int]:
    """(uint8 image of raw's shape, number of values clipped or not finite)."""
    if rule.mode == "fixed":
        unit = (raw.astype(np.float32) - rule.low) / (rule.high - rule.low)
    else:
        unit = in_type_range(raw)
        if rule.mode == "image_percentiles":
            low, high = _percentiles(unit.ravel(), rule.percentiles)
            unit = (unit - low) / (high - low)
        elif rule.mode == "dataset_percentiles":
            unit = (unit - rule.low) / (rule.high - rule.low)
    finite = np.isfinite(unit)
    clipped = int((~finite).sum() + (unit[finite] < 0).sum() + (unit[finite] > 1).sum())
    unit = np.clip(np.where(finite, unit, 0.0), 0.0, 1.0)
    return np.rint(unit * 255).astype(np.uint8), clipped


def _percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:  # a flat image: map its one value to the middle of the range rather than divide by 0
        return low - 0.5, low + 0.5
    return low, high


def is_eight_bit(mode: str) -> bool:
    """Whether a Pillow image mode holds 8 bits per channel (or fewer)."""
    return not (mode.startswith("I") or mode == "F")


def resolve(cfg: IntensityConfig, all_eight_bit: bool, training_images: Iterable[np.ndarray]) -> IntensityRule:
    """The concrete rule for a dataset; `training_images` (raw arrays) are read only for dataset percentiles."""
    mode = cfg.mode
    if mode == "auto":  # per-image percentiles: what microscopy tools do with 12- to 16-bit cameras
        mode = "dtype" if all_eight_bit else "image_percentiles"
    if mode == "fixed":
        return IntensityRule("fixed", cfg.low, cfg.high, cfg.percentiles)
    if mode != "dataset_percentiles":
        return IntensityRule(mode, percentiles=cfg.percentiles)
    sample = np.concatenate([_grid_sample(in_type_range(image)) for image in training_images] or [np.zeros(1)])
    low, high = _percentiles(sample, cfg.percentiles)
    return IntensityRule("dataset_percentiles", low, high, cfg.percentiles)


def _grid_sample(unit: np.ndarray) -> np.ndarray:
    flat = unit.ravel()
    step = max(1, flat.size // SAMPLE_PIXELS_PER_IMAGE)
    return flat[::step]
