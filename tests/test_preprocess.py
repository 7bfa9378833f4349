"""data.preprocess: the green channel and CLAHE, applied alike by prepare, predict and the served model."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganseg.config import ParamsError, PreprocessConfig, validate_params
from ganseg.contracts import FULL_TEST_DIR, ModelCard, read_dataset_stats
from ganseg.data.intensity import IntensityRule
from ganseg.data.preprocess import equalised
from ganseg.data.sources import read_model_input
from ganseg.segmenter.export import export_model
from ganseg.segmenter.networks import build_segmenter
from ganseg.segmenter.segment_folder import FileSegmenter
from tests.conftest import prepare_dataset, write_pair

GREEN_CLAHE = PreprocessConfig(grey="green", clahe_clip=2.0, clahe_grid=4)


def colour_image(rng, size=40) -> np.ndarray:
    """A dim, low-contrast colour picture whose channels differ."""
    red = rng.integers(150, 160, (size, size))
    green = 60 + np.linspace(0, 20, size)[None, :] + rng.integers(0, 6, (size, size))
    blue = rng.integers(10, 20, (size, size))
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def encoded(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_green_reads_the_green_channel_of_a_colour_image_not_its_luminance():
    image = colour_image(np.random.default_rng(0))
    green_only = PreprocessConfig(grey="green")
    green, _ = read_model_input(io.BytesIO(encoded(image)), 1, IntensityRule(), preprocess=green_only)
    luminance, _ = read_model_input(io.BytesIO(encoded(image)), 1, IntensityRule())
    assert green.shape == (40, 40, 1)
    assert np.array_equal(green[..., 0], image[..., 1])
    assert not np.array_equal(luminance[..., 0], image[..., 1])


def test_clahe_spreads_a_low_contrast_image_and_off_changes_nothing():
    image = colour_image(np.random.default_rng(1))[..., 1:2]
    spread = equalised(image, PreprocessConfig(clahe_clip=2.0, clahe_grid=4))
    assert spread.shape == image.shape and spread.dtype == np.uint8
    assert np.ptp(spread) > 2 * np.ptp(image)
    assert np.array_equal(equalised(image, PreprocessConfig()), image)
    assert np.array_equal(equalised(image, None), image)
    assert np.array_equal(spread, equalised(image.copy(), PreprocessConfig(clahe_clip=2.0, clahe_grid=4)))


@pytest.mark.parametrize("side", [1, 2, 5, 9])
def test_clahe_takes_images_smaller_than_its_grid(side):
    image = np.random.default_rng(side).integers(0, 256, (side, side + 3, 1)).astype(np.uint8)
    assert equalised(image, PreprocessConfig(clahe_clip=2.0)).shape == image.shape


def test_green_needs_one_channel():
    with pytest.raises(ParamsError, match="channels: 1"):
        validate_params({"data": {"channels": 3, "preprocess": {"grey": "green"}}})


def test_prepare_records_the_preprocessing_and_predict_sees_what_prepare_wrote(tmp_path, tiny_params):
    rng = np.random.default_rng(2)
    source = tmp_path / "src"
    for i in range(16):
        mask = np.zeros((40, 40), np.uint8)
        mask[10:30, i:10 + i] = 1
        write_pair(source, f"img_{i}", colour_image(rng), mask)
    params = tiny_params.with_overrides({
        "data.source": str(source), "data.class_names": ["background", "blob"], "data.fit": "tile",
        "data.image_size": 16, "data.split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "data.preprocess": GREEN_CLAHE.model_dump(),
    })
    data_dir = tmp_path / "prepared"
    stats = prepare_dataset(params.data, params.seed, data_dir, progress=False)
    assert stats.preprocess == GREEN_CLAHE and read_dataset_stats(data_dir).preprocess == GREEN_CLAHE

    card = ModelCard.for_data(params.model, stats)
    assert card.preprocess == GREEN_CLAHE
    torch.manual_seed(0)
    export_model(tmp_path / "model", build_segmenter(params.model, 1, 2).state_dict(), card)
    segmenter = FileSegmenter(tmp_path / "model")
    stems = (data_dir / FULL_TEST_DIR / "stems.txt").read_text().split()
    prepared = sorted((data_dir / FULL_TEST_DIR / "images").iterdir())
    assert stems and len(prepared) == len(stems)
    for stem, prepared_file in zip(stems, prepared):
        seen, _ = segmenter.segment((source / "images" / f"{stem}.png").read_bytes(), flips=False)
        assert np.array_equal(seen[..., 0], np.asarray(Image.open(prepared_file)))


def test_default_preprocessing_leaves_stats_json_as_it_was(tmp_path, tiny_params):
    data_dir = tmp_path / "prepared"
    prepare_dataset(tiny_params.data, tiny_params.seed, data_dir, progress=False)
    assert "preprocess" not in json.loads((data_dir / "stats.json").read_text())
    assert read_dataset_stats(data_dir).preprocess is None
