"""The one typed schema behind params.yaml.

Every stage loads its settings through `load_params`, which applies `--set dotted.key=value`
overrides and turns pydantic's errors into one readable message per bad key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ganseg.data.void import VOID
from ganseg.dotted import has_dotted, parse_override, set_dotted
from ganseg.errors import ParamsError, invalid_fields


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Strict):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1, got {total:g}")
        return self


class SyntheticConfig(_Strict):
    num_images: int = Field(400, ge=3, description="how many image/mask pairs to generate")
    size: int = Field(64, ge=16, description="side of each generated square image, in pixels")


class IntensityConfig(_Strict):
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


class DataConfig(_Strict):
    source: str = Field("synthetic", description="'synthetic' or a folder holding images/ and masks/")
    output_dir: str = "data/prepared"
    image_size: int = Field(64, ge=8, description="side of the square training tiles")
    fit: Literal["resize", "tile"] = "resize"
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
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="unusable source files: 'fail' lists them all and stops; 'skip' leaves them out (skipped.csv)",
    )
    max_image_pixels: int = Field(  # the default is Pillow's own limit
        89_478_485, ge=1, description="images with more pixels are refused as possible decompression bombs"
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


class ModelConfig(_Strict):
    base_channels: int = Field(16, ge=4)
    depth: int = Field(3, ge=1, le=6, description="number of 2x down-samplings in the U-Net")
    norm: Literal["batch", "instance", "group", "none"] = "group"
    disc_channels: int = Field(32, ge=4)
    disc_layers: int = Field(3, ge=1, le=5)
    spectral_norm: bool = True
    disc_input: Literal["concat", "product"] = Field(
        "concat",
        description="concat: image ⊕ class probabilities; product: image × each class probability (Luc et al. 2016)",
    )


class SemiConfig(_Strict):
    """Semi-supervised training (Hung et al. 2018): part of the training images is used without masks.

    On those images the discriminator's confidence map picks the pixels whose predicted class
    becomes a target for the segmenter. Active only with lambda_adv > 0 (it needs a discriminator).
    """

    label_fraction: float = Field(1.0, gt=0, le=1, description="share of training images whose masks are used")
    lambda_semi: float = Field(0.1, ge=0, description="weight of the self-taught cross-entropy")
    threshold: float = Field(0.2, ge=0, le=1, description="a pixel is trusted above this realness: the discriminator"
                             " score's place between its targets for predicted (0) and real (1) masks, in 0..1")
    start_epoch: int = Field(3, ge=1, description="first epoch with the self-taught loss; after adv_warmup_epochs")


class AugmentConfig(_Strict):
    """Joint image/mask augmentation of training tiles (validation and test are never augmented)."""

    enabled: bool = True
    crop_scale: float = Field(1.0, gt=0, le=1, description="random crop of this share of the area or more, resized back")
    flips: bool = True
    rot90: bool = True
    affine_degrees: float = Field(0.0, ge=0, le=180)
    elastic_alpha: float = Field(0.0, ge=0, description="0 = no elastic deformation")
    brightness: float = Field(0.1, ge=0, le=1, description="image only")
    contrast: float = Field(0.1, ge=0, le=1, description="image only")


class FaultInjection(_Strict):
    """Kill one worker process once, to exercise recovery (tests and drills, not production)."""

    kill_rank: int = Field(0, ge=0)
    at_epoch: int = Field(2, ge=2, description="killed as this epoch starts; the one before is checkpointed")


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1, description="per worker")
    lr_g: float = Field(2e-3, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    lambda_adv: float = Field(0.05, ge=0, description="0 trains the supervised baseline")
    adv_loss: Literal["hinge", "vanilla", "lsgan"] = "hinge"
    dice_weight: float = Field(1.0, ge=0)
    adv_warmup_epochs: int = Field(2, ge=0, description="supervised-only epochs before the adversarial term starts")
    class_weights: Literal["none", "inverse_sqrt"] | list[float] = Field(
        "none",
        description="cross-entropy and Dice weight per class: none, inverse_sqrt (of the training pixel share), or a list",
    )
    ema_decay: float = Field(0.99, ge=0, lt=1, description="exponential moving average of the generator; 0 = off")
    semi: SemiConfig = Field(default_factory=SemiConfig)
    num_workers: int | Literal["auto"] = Field("auto", description="Ray Train workers; auto = GPUs or CPUs")
    use_gpu: bool | Literal["auto"] = "auto"
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 needs a GPU")
    channels_last: bool = False
    storage_path: str = Field("runs/ray", description="Ray Train storage (local folder, shared mount or URI)")
    checkpoints_to_keep: int = Field(2, ge=1, description="best k by validation mIoU, plus the latest")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint; -1 = no limit")
    resume: bool = Field(True, description="continue an unfinished run of the same config instead of starting over")
    fault_injection: FaultInjection | None = None
    log_images_every: int = Field(
        5, ge=0, description="log a grid of validation overlays every N epochs and at the last; 0 = never"
    )

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, value):
        if isinstance(value, list) and (not value or any(w < 0 for w in value) or not any(w > 0 for w in value)):
            raise ValueError("a list of class weights must hold one non-negative number per class, not all 0")
        return value

    @field_validator("num_workers")
    @classmethod
    def _positive_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 (or 'auto')")
        return value


class SearchDimension(_Strict):
    type: Literal["choice", "uniform", "loguniform", "randint"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> "SearchDimension":
        if self.type == "choice":
            if not self.values:
                raise ValueError("'choice' needs a non-empty 'values' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"'{self.type}' needs 'low' < 'high'")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("'loguniform' needs 'low' > 0")
        return self


def _default_search_space() -> dict[str, SearchDimension]:
    return {
        "train.lr_g": SearchDimension(type="loguniform", low=5e-4, high=5e-3),
        "train.lambda_adv": SearchDimension(type="choice", values=[0.01, 0.03, 0.1]),
    }


class TuneConfig(_Strict):
    num_samples: int = Field(4, ge=1)
    epochs: int = Field(6, ge=1, description="epochs per trial (ASHA may stop a trial earlier)")
    workers_per_trial: int = Field(1, ge=1)
    max_concurrent_trials: int | Literal["auto"] = "auto"
    metric: str = "val_miou"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(2, ge=1)
    search_space: dict[str, SearchDimension] = Field(default_factory=_default_search_space)


class EvaluateConfig(_Strict):
    num_overlays: int = Field(8, ge=0)
    batch_size: int = Field(32, ge=1)
    boundary_tolerance: int = Field(2, ge=0, description="boundary F1: pixels of slack between predicted and true edges")
    flip_tta: bool = Field(True, description="test and predict: average the logits over the image's mirror images")


class MlflowConfig(_Strict):
    experiment: str = Field("ganseg", min_length=1)
    registered_model: str = Field("ganseg-segmenter", pattern=r"^[A-Za-z0-9_.\-]+$",
                                  description="model registry name; every train run registers a version under it")


class Params(_Strict):
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        factor = 2**self.model.depth
        if self.data.image_size % factor:
            raise ValueError(
                f"data.image_size {self.data.image_size} is not divisible by 2**model.depth = {factor}"
            )
        weights = self.train.class_weights
        if isinstance(weights, list) and len(weights) != self.data.num_classes:
            raise ValueError(
                f"train.class_weights has {len(weights)} values for {self.data.num_classes} classes (data.class_names)"
            )
        semi, warmup = self.train.semi, self.train.adv_warmup_epochs
        if semi.label_fraction < 1 and self.train.lambda_adv > 0 and semi.start_epoch <= warmup:
            raise ValueError(f"train.semi.start_epoch {semi.start_epoch} must come after train.adv_warmup_epochs"
                             f" ({warmup}): the self-taught loss needs the discriminator; set it to {warmup + 1} or later")
        for key in self.tune.search_space:
            if not has_dotted(self.model_dump(), key):
                raise ValueError(f"tune.search_space key {key!r} is not a params key")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> "Params":
        """A validated copy with dotted keys replaced (used for tune trials and the best config)."""
        raw = self.model_dump()
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        return validate_params(raw, source="overrides")


def validate_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{source} is not valid:\n{invalid_fields(err)}") from None


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None, required: bool = True) -> Params:
    """Validated params from `path` plus overrides; with required=False a missing file means the defaults."""
    path = Path(path)
    if not path.is_file() and required:
        raise ParamsError(f"params file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    return validate_params(raw, source=str(path))
