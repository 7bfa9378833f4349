"""The files one stage writes and another reads, each as one typed model, read and written only here.

- `stats.json` (prepare -> train, evaluate, bench): `DatasetStats`, what the prepared data holds.
- `model.json` (train -> evaluate, predict): `ModelCard`, everything needed to rebuild and use the
  exported segmenter.
- `imagegen.json` (image generator -> generate): `ImagegenCard`, the same for the mask -> image generator.

The JSON keeps its keys. A key that came later has the default that states what files without it
meant; a key every reader needs and no default can stand for (such as `fit`) is required, and a
file without it is refused with what to run again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ganseg.config import DataConfig, ImagegenConfig, ModelConfig, PreprocessConfig
from ganseg.data.intensity import IntensityRule
from ganseg.errors import CheckpointError, DataError, GansegError, invalid_fields
from ganseg.fileio import read_json, write_json

STATS_FILE = "stats.json"
FULL_TEST_DIR = "test_full"  # the prepared test images and masks at their own size
MODEL_CARD = "model.json"
IMAGEGEN_CARD = "imagegen.json"
Fit = Literal["resize", "tile"]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict:
        """The file's content: an optional key without a value is left out, as it always was."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class DatasetStats(_Contract):
    """What `prepare` wrote: the classes, the tile size and fit, counts and pixel shares per split."""

    source: str
    class_names: list[str]
    num_classes: int
    channels: int
    image_size: int
    fit: Fit
    counts: dict[str, int]  # tiles per split
    class_frequency: dict[str, list[float]]  # per split: each class's share of the annotated pixels
    void_fraction: dict[str, float] | None = None  # per split; only with data.ignore_index
    skipped_files: int
    test_images: int  # kept whole in test_full/
    split_source: Literal["hash", "split_file"] = "hash"  # files older than data.split_file used the hash
    intensity: IntensityRule = IntensityRule()  # files older than data.intensity read 8-bit images as they are
    clipped_share: float = 0.0  # ... which clips nothing
    preprocess: PreprocessConfig | None = None  # data.preprocess after the intensity rule; None: nothing done

    @property
    def train_frequency(self) -> list[float]:
        """Each class's share of the annotated training pixels."""
        return self.class_frequency["train"]


class ModelCard(_Contract):
    """The exported segmenter's architecture and the data it was trained on; the train run it came from."""

    model: ModelConfig
    in_channels: int
    num_classes: int
    class_names: list[str]
    image_size: int
    fit: Fit  # how new images meet the network: sliding tiles or resized whole
    intensity: IntensityRule = IntensityRule()  # cards older than data.intensity: 8-bit images as they are
    preprocess: PreprocessConfig | None = None  # as in the stats.json it was trained on
    best_epoch: int | None = None
    best_val_miou: float | None = None
    mlflow_run_id: str | None = None
    registered_model: str | None = None
    registered_model_version: str | None = None

    @classmethod
    def for_data(cls, model: ModelConfig, stats: DatasetStats, **training) -> "ModelCard":
        """The card of a segmenter of `model` trained on the prepared data `stats` describes."""
        return cls(
            model=model, in_channels=stats.channels, num_classes=stats.num_classes, class_names=stats.class_names,
            image_size=stats.image_size, fit=stats.fit, intensity=stats.intensity,
            preprocess=stats.preprocess, **training,
        )

    def describe_network(self) -> str:
        return (
            f"a U-Net of depth {self.model.depth}, base_channels {self.model.base_channels}, norm {self.model.norm},"
            f" {self.in_channels} input channel(s) and {self.num_classes} classes"
        )


class ImagegenCard(_Contract):
    """The exported image generator's architecture, and how masks are read for it (as prepare read
    the masks it was trained on)."""

    imagegen: ImagegenConfig
    channels: int  # of the images it draws
    class_names: list[str]
    image_size: int  # of the tiles it was trained on; it draws any size
    mask_format: Literal["ids", "binary", "rgb"] = "ids"
    palette: dict[str, int] = {}
    ignore_index: int | None = None
    mlflow_run_id: str | None = None
    registered_model: str | None = None
    registered_model_version: str | None = None

    @classmethod
    def for_data(cls, imagegen: ImagegenConfig, data: DataConfig, stats: DatasetStats, **training) -> "ImagegenCard":
        """The card of a generator of `imagegen` trained on the prepared data `stats` describes,
        whose masks were read with the `data` settings."""
        return cls(imagegen=imagegen, channels=stats.channels, class_names=stats.class_names,
                   image_size=stats.image_size, mask_format=data.mask_format, palette=data.palette,
                   ignore_index=data.ignore_index, **training)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def mask_reader(self, max_image_pixels: int) -> DataConfig:
        """The data settings that decode a mask file the way the training masks were decoded."""
        return DataConfig(class_names=self.class_names, mask_format=self.mask_format, palette=self.palette,
                          ignore_index=self.ignore_index, max_image_pixels=max_image_pixels)


def read_imagegen_card(path: str | Path) -> ImagegenCard:
    return _read(ImagegenCard, Path(path), "the card of an image generator", CheckpointError, "export it again")


def write_imagegen_card(model_dir: str | Path, card: ImagegenCard) -> None:
    write_json(Path(model_dir) / IMAGEGEN_CARD, card.to_json())


def read_dataset_stats(data_dir: str | Path) -> DatasetStats:
    path = Path(data_dir) / STATS_FILE
    if not path.is_file():
        raise DataError(f"{data_dir} is not a prepared dataset (no {STATS_FILE}): run `ganseg prepare` first")
    return _read(DatasetStats, path, "the stats of a prepared dataset", DataError, "run `ganseg prepare` again")


def write_dataset_stats(data_dir: str | Path, stats: DatasetStats) -> None:
    write_json(Path(data_dir) / STATS_FILE, stats.to_json())


def read_model_card(path: str | Path) -> ModelCard:
    remedy = "run `ganseg prepare` and `ganseg train` again"
    return _read(ModelCard, Path(path), "model card", CheckpointError, remedy)


def write_model_card(model_dir: str | Path, card: ModelCard) -> None:
    write_json(Path(model_dir) / MODEL_CARD, card.to_json())


def _read(contract: type[_Contract], path: Path, what: str, error: type[GansegError], remedy: str):
    try:
        return contract.model_validate(read_json(path))
    except ValidationError as err:
        missing = [".".join(map(str, e["loc"])) for e in err.errors() if e["type"] == "missing"]
        if len(missing) == err.error_count():
            raise error(f"{path}: written by an older ganseg (no {', '.join(missing)}): {remedy}") from None
        raise error(f"{path}: not a valid {what}:\n{invalid_fields(err)}\n  ({remedy})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path}: not a valid {what} (not JSON: {err}); {remedy}") from None
