"""The one typed schema behind params.yaml.

Every stage loads its settings through `load_params`, which applies `--set dotted.key=value`
overrides and turns pydantic's errors into one readable message per bad key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ganseg.config.base import Strict
from ganseg.config.data import DataConfig, IntensityConfig, PreprocessConfig, SplitConfig, SyntheticConfig
from ganseg.config.imagegen import ImagegenConfig
from ganseg.config.train import (
    AugmentConfig,
    FaultInjection,
    GeneratedPairsConfig,
    MaskDeformConfig,
    ModelConfig,
    RuntimeConfig,
    SemiConfig,
    TrainConfig,
)
from ganseg.dotted import has_dotted, parse_override, set_dotted
from ganseg.errors import ParamsError, invalid_fields

__all__ = [
    "AugmentConfig", "DataConfig", "EvaluateConfig", "FaultInjection", "GeneratedPairsConfig", "ImagegenConfig",
    "IntensityConfig", "MaskDeformConfig", "MlflowConfig", "ModelConfig", "Params", "ParamsError", "PreprocessConfig",
    "RuntimeConfig", "SearchDimension", "SemiConfig", "SplitConfig", "SyntheticConfig", "TrainConfig", "TuneConfig",
    "load_params", "validate_params",
]


class SearchDimension(Strict):
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
        "train.lambda_adv": SearchDimension(type="choice", values=[0.0, 0.01, 0.03, 0.1]),
    }


class TuneConfig(Strict):
    num_samples: int = Field(4, ge=1)
    epochs: int = Field(4, ge=1, description="epochs per trial (ASHA may stop a trial earlier)")
    workers_per_trial: int = Field(1, ge=1, description="1: a trial trains in its own process; more: it launches a"
                                   " Ray Train TorchTrainer of that many DDP workers")
    max_concurrent_trials: int | Literal["auto"] = "auto"
    metric: str = "val_miou"
    mode: Literal["max", "min"] = "max"
    tie_margin: float = Field(
        0.002, ge=0, description="trials whose metric is within this of the best tie; of tied trials the one with"
        " the smallest train.lambda_adv wins (the supervised baseline trains fastest), then the best",
    )
    grace_period: int = Field(
        1, ge=1, description="epochs after the adversarial warm-up (train.adv_warmup_epochs) before ASHA first"
        " compares trials: its first rung is warm-up + grace_period, which must not pass tune.epochs",
    )
    search_space: dict[str, SearchDimension] = Field(default_factory=_default_search_space)


class EvaluateConfig(Strict):
    num_overlays: int = Field(8, ge=0)
    batch_size: int = Field(32, ge=1)
    boundary_tolerance: int = Field(2, ge=0, description="boundary F1: pixels of slack between predicted and true edges")
    flip_tta: bool = Field(True, description="test and predict: average the logits over each window's (or the resized image's) mirror images")


class MlflowConfig(Strict):
    experiment: str = Field("ganseg", min_length=1)
    registered_model: str = Field("ganseg-segmenter", pattern=r"^[A-Za-z0-9_.\-]+$",
                                  description="model registry name; every train run registers a version under it")
    registered_image_generator: str = Field(
        "ganseg-image-generator", pattern=r"^[A-Za-z0-9_.\-]+$",
        description="model registry name of the mask -> image generator; every train_imagegen run registers a version",
    )
    log_images_every: int = Field(
        5, ge=0, description="every N epochs and at the last, a grid of validation overlays (train) or of mask |"
        " real | samples (train_imagegen); 0 = never",
    )


class Params(Strict):
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    imagegen: ImagegenConfig = Field(default_factory=ImagegenConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        factor = 2**self.model.depth
        if self.data.image_size % factor:
            raise ValueError(
                f"data.image_size {self.data.image_size} is not divisible by 2**model.depth = {factor}"
            )
        factor = 2**self.imagegen.depth
        if self.data.image_size % factor:
            raise ValueError(
                f"data.image_size {self.data.image_size} is not divisible by 2**imagegen.depth = {factor}"
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

    def with_overrides(self, overrides: dict[str, Any], source: str = "overrides") -> "Params":
        """A validated copy with dotted keys replaced (tune trials, the best config, --set); errors name `source`."""
        raw = self.model_dump()
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        return validate_params(raw, source=source)


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
