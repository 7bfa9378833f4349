"""params.yaml's data section: where the images come from and how prepare turns them into tiles."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ganseg.config.base import Strict
from ganseg.data.void import VOID


class SplitConfig(Strict):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1, got {total:g}")
        return self


class SyntheticConfig(Strict):
    """The built-in dataset that stage synthesize writes to data/synthetic."""

    num_images: int = Field(400, ge=3, description="how many image/mask pairs to generate")
    size: int = Field(64, ge=16, description="side of each generated square image, in pixels")


class IntensityConfig(Strict):
    """How image values of any bit depth map to the network's 0..255 input (see ganseg/data/intensity.py)."""

    mode: Literal["auto", "dtype", "fixed", "image_percentiles", "dataset_percentiles"] = Field(
        "auto",
        description="auto: dtype for 8-bit images, else image_percentiles; dtype: the full range of the"
        " image's type (0..255, 0..65535, 0..1 for floats); fixed: low..high in the images' own values;"
        " image_percentiles / dataset_percentiles: the percentiles of each image / of the training images",
    )
    low: float | None = Field(None, description="fixed: the value that becomes 0")
    high: float | None = Field(None, description="fixed: the value that becomes 255")
    percentiles: tuple[float, float] = Field((1.0, 99.8), description="lower and upper percentile")

    @model_validator(mode="after")
    def _complete(self) -> "IntensityConfig":
        if self.mode == "fixed" and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError("mode 'fixed' needs low < high")
        lower, upper = self.percentiles
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {list(self.percentiles)}")
        return self


class PreprocessConfig(Strict):
    """What the image becomes after the intensity rule, before the network sees it (see ganseg/data/preprocess.py)."""

    grey: Literal["luminance", "green"] = Field(
        "luminance",
        description="how data.channels: 1 reads a colour image: its luminance, or its green channel (retinal"
        " fundus images: the vessels' best contrast)",
    )
    clahe_clip: float = Field(
        0.0, ge=0, description="> 0: contrast-limited adaptive histogram equalisation (CLAHE) with this clip"
        " limit (2 is usual); 0 = off",
    )
    clahe_grid: int = Field(8, ge=1, le=64, description="CLAHE: tiles per side of the image")

    @property
    def is_identity(self) -> bool:
        return self.grey == "luminance" and self.clahe_clip == 0


class DataConfig(Strict):
    source: str = Field(
        "data/synthetic",
        description="the folder holding images/ and masks/; data/synthetic is the built-in data (stage synthesize)",
    )
    output_dir: str = "data/prepared"
    image_size: int = Field(64, ge=8, description="side of the square training tiles")
    fit: Literal["resize", "tile"] = "resize"
    tile_stride: int | None = Field(
        None, ge=1, description="fit: tile: training tiles start every tile_stride pixels, overlapping when below"
        " image_size, the last ones flush with the image's right and bottom edges; null: image_size, side by side,"
        " and what does not fill a tile is left out. Validation and test tiles are always side by side",
    )
    channels: Literal[1, 3] = 1
    class_names: list[str] = Field(default_factory=lambda: ["background", "membrane", "organelle"])
    mask_format: Literal["ids", "binary", "rgb"] = "ids"
    palette: dict[str, int] = Field(
        default_factory=dict, description="for rgb masks: 'R,G,B' -> class id (or -> ignore_index: void)"
    )
    ignore_index: int | None = Field(
        None, ge=0, description="mask value (ids, binary) or palette id (rgb) of unannotated pixels: no loss, no metric"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    split_file: str | None = Field(
        None,
        description="CSV of stem,split (train/val/test) fixing each image's split instead of the hash split;"
        " without val rows a seeded data.split.val share of the train images validates",
    )
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="unusable source files: 'fail' lists them all and stops; 'skip' leaves them out (skipped.csv)",
    )
    max_image_pixels: int = Field(  # the default is Pillow's own limit
        89_478_485, ge=1, description="images with more pixels are refused as possible decompression bombs"
    )
    ray_data: Literal["auto"] | bool = Field(
        "auto",
        description="prepare's blocks of pairs as Ray Data tasks over every CPU of the Ray cluster: true, false,"
        " or auto (when RAY_ADDRESS names a cluster, or for at least 500 MB of images and 2 CPUs)",
    )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @field_validator("class_names")
    @classmethod
    def _at_least_two(cls, names: list[str]) -> list[str]:
        if len(names) < 2:
            raise ValueError("at least two classes are needed")
        if len(names) > VOID:
            raise ValueError(f"at most {VOID} classes: masks are stored as uint8 with {VOID} reserved for void pixels")
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names

    @field_validator("ignore_index")
    @classmethod
    def _not_a_class(cls, value: int | None, info: ValidationInfo) -> int | None:
        names, mask_format = info.data.get("class_names"), info.data.get("mask_format")
        if value is None or names is None:  # no value, or class_names already reported as invalid
            return value
        if value < len(names):
            raise ValueError(f"{value} is a class id (0..{len(names) - 1}); void needs a value of its own")
        if mask_format == "binary" and value == 255:
            raise ValueError("255 is class 1 of binary masks (0 / 255); void needs a value of its own")
        return value

    @field_validator("palette")
    @classmethod
    def _palette_keys(cls, palette: dict[str, int]) -> dict[str, int]:
        for key in palette:
            parts = key.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() and int(p) <= 255 for p in parts):
                raise ValueError(f"palette key {key!r} must look like 'R,G,B' with values 0-255")
        return palette

    @model_validator(mode="after")
    def _palette_matches(self) -> "DataConfig":
        if self.mask_format == "rgb" and not self.palette:
            raise ValueError("mask_format 'rgb' needs a palette ('R,G,B': class id)")
        bad = [v for v in self.palette.values() if not 0 <= v < self.num_classes and v != self.ignore_index]
        if bad:
            raise ValueError(
                f"palette class ids {bad} are outside 0..{self.num_classes - 1}"
                + ("" if self.ignore_index is None else f" and are not data.ignore_index {self.ignore_index}")
            )
        if self.mask_format == "binary" and self.num_classes != 2:
            raise ValueError("mask_format 'binary' needs exactly two class_names")
        return self

    @model_validator(mode="after")
    def _green_is_one_channel(self) -> "DataConfig":
        if self.preprocess.grey == "green" and self.channels != 1:
            raise ValueError("preprocess.grey 'green' reads one channel of a colour image; it needs channels: 1")
        if self.tile_stride is not None and self.fit != "tile":
            raise ValueError("tile_stride places tiles; it needs fit: tile")
        return self
