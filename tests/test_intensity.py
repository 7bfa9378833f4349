"""Images of any bit depth: read at full depth, mapped by data.intensity, the same way in prepare and predict."""

import numpy as np
import pytest
import torch
from PIL import Image

from ganseg.config import IntensityConfig, ParamsError, validate_params
from ganseg.contracts import ModelCard, read_dataset_stats
from ganseg.data.intensity import IntensityRule, map_to_uint8, resolve
from ganseg.data.sources import read_image
from ganseg.metrics import scores
from ganseg.segmenter.evaluation import evaluate_full_size
from ganseg.segmenter.export import export_model
from tests.conftest import predict_in_process, prepare_dataset, write_pair


def camera_image(rng, mask, dark=900.0, bright=3600.0, noise=120.0):
    """A 12-bit-camera-like picture of `mask`: values between about 500 and 4000, never near 65535."""
    return dark + (bright - dark) * mask + rng.normal(0, noise, mask.shape)


def blob_mask(rng, size=48):
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(3):
        cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [rng.integers(4, 9)]
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
    return mask


def test_sixteen_bit_values_are_read_unclipped(tmp_path):
    values = np.array([[0, 1000], [3000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "a.tif")
    Image.fromarray(values).save(tmp_path / "a.png")
    for name in ("a.tif", "a.png"):
        image = read_image(tmp_path / name, channels=1)
        assert image.dtype == np.uint16 and np.array_equal(image[..., 0], values)
    assert read_image(tmp_path / "a.png", channels=3).shape == (2, 2, 3)


def test_float_values_are_read_unclipped(tmp_path):
    values = np.array([[-2.5, 0.25], [17.0, 4000.5]], np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert np.array_equal(read_image(tmp_path / "f.tif", channels=1)[..., 0], values)


def test_dtype_rule_maps_each_type_range_to_0_255():
    eight, _ = map_to_uint8(np.array([0, 128, 255], np.uint8), IntensityRule("dtype"))
    sixteen, _ = map_to_uint8(np.array([0, 257 * 128, 65535], np.uint16), IntensityRule("dtype"))
    floats, _ = map_to_uint8(np.array([0.0, 128 / 255, 1.0], np.float32), IntensityRule("dtype"))
    assert eight.tolist() == sixteen.tolist() == floats.tolist() == [0, 128, 255]


def test_fixed_rule_uses_raw_values_and_counts_what_it_clips():
    mapped, clipped = map_to_uint8(np.array([100, 600, 1100, 5000], np.uint16), IntensityRule("fixed", 100, 1100))
    assert mapped.tolist() == [0, 128, 255, 255] and clipped == 1


def test_dtype_rule_counts_float_values_outside_0_1_and_non_finite():
    _, clipped = map_to_uint8(np.array([-0.5, 0.5, 2.0, np.nan], np.float32), IntensityRule("dtype"))
    assert clipped == 3


def test_image_percentiles_make_a_16_bit_image_and_its_8_bit_twin_alike():
    rng = np.random.default_rng(0)
    raw = camera_image(rng, blob_mask(rng)).clip(0, 65535).astype(np.uint16)
    twin = np.rint((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)  # e.g. an 8-bit export
    rule = IntensityRule("image_percentiles", percentiles=(1.0, 99.8))
    a, _ = map_to_uint8(raw, rule)
    b, _ = map_to_uint8(twin, rule)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert a.min() == 0 and a.max() == 255  # the structure spans the whole input range


def test_auto_is_dtype_for_8_bit_and_image_percentiles_otherwise():
    assert resolve(IntensityConfig(), True, []).mode == "dtype"
    assert resolve(IntensityConfig(), False, []).mode == "image_percentiles"


def test_dataset_percentiles_come_from_the_training_images_in_type_range_units():
    images = [np.full((10, 10), v, np.uint16) for v in (6553, 13107, 19660)]  # 0.1, 0.2, 0.3 of 65535
    rule = resolve(IntensityConfig(mode="dataset_percentiles", percentiles=(0, 100)), False, images)
    assert rule.low == pytest.approx(0.1, abs=1e-4) and rule.high == pytest.approx(0.3, abs=1e-4)
    mapped, _ = map_to_uint8(np.array([13107], np.uint16), rule)
    assert mapped.tolist() == [128]


@pytest.mark.parametrize(
    "intensity, message",
    [({"mode": "fixed", "low": 10}, "needs low < high"), ({"percentiles": [99, 1]}, "lower < upper")],
)
def test_incomplete_intensity_rules_are_refused(intensity, message):
    with pytest.raises(ParamsError, match=message):
        validate_params({"data": {"intensity": intensity}})


def deep_folder(folder, dtype, count=12, seed=0):
    """Pairs of 48x48 camera-like images (16-bit integers or 32-bit floats) and their blob masks."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        mask = blob_mask(rng)
        image = camera_image(rng, mask)
        image = image.clip(0, 65535).astype(np.uint16) if dtype == "uint16" else image.astype(np.float32)
        write_pair(folder, f"img_{i:02d}", image, mask, image_ext=".tif")
    return folder


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_deep_images_prepare_train_evaluate_and_predict(tmp_path, tiny_params, dtype):
    source = deep_folder(tmp_path / "src", dtype)
    params = tiny_params.with_overrides({
        "data.source": str(source), "data.class_names": ["background", "blob"], "data.fit": "tile",
        "data.image_size": 16, "data.split": {"train": 0.5, "val": 0.25, "test": 0.25},
        "train.lambda_adv": 0.0, "train.epochs": 1, "evaluate.flip_tta": False,
    })
    data_dir = tmp_path / "prepared"
    stats = prepare_dataset(params.data, params.seed, data_dir, progress=False)
    assert stats.intensity.mode == "image_percentiles"
    assert stats.clipped_share < 0.02  # the percentile tails only
    tiles = np.load(data_dir / "train_images.npy")
    masks = np.load(data_dir / "train_masks.npy")
    blob, background = tiles[:, 0][masks == 1].mean(), tiles[:, 0][masks == 0].mean()
    assert blob - background > 150  # the structure survived: not saturated, not crushed to black
    generator = _train(params, data_dir, steps=60)
    result = evaluate_full_size(generator, data_dir, stats, progress=False)
    assert result.num_images == stats.test_images and scores(result.confusion)["miou"] > 0.6

    model = tmp_path / "model"
    export_model(model, generator.state_dict(), ModelCard.for_data(params.model, stats))
    summary = predict_in_process(model, source / "images", tmp_path / "masks")
    assert summary["written"] == 12 and not summary["failed"]
    predicted = np.asarray(Image.open(tmp_path / "masks" / "img_00.png"))
    assert (predicted == np.asarray(Image.open(source / "masks" / "img_00.png"))).mean() > 0.8


def test_a_16_bit_image_and_its_8_bit_twin_give_the_same_mask(tmp_path, tiny_params):
    source = deep_folder(tmp_path / "src", "uint16", count=16)
    params = tiny_params.with_overrides({
        "data.source": str(source), "data.class_names": ["background", "blob"], "data.fit": "tile",
        "data.image_size": 16, "train.lambda_adv": 0.0, "train.epochs": 2, "train.lr_g": 0.005,
    })
    data_dir = tmp_path / "prepared"
    prepare_dataset(params.data, params.seed, data_dir, progress=False)
    generator = _train(params, data_dir, steps=80)
    model = tmp_path / "model"
    export_model(model, generator.state_dict(), ModelCard.for_data(params.model, read_dataset_stats(data_dir)))

    twins = tmp_path / "twins"
    twins.mkdir()
    for path in sorted((source / "images").glob("*.tif"))[:4]:
        raw = np.asarray(Image.open(path)).astype(np.float64)
        Image.fromarray(np.rint((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)).save(
            twins / f"{path.stem}.png")
    predict_in_process(model, twins, tmp_path / "from_8bit")
    predict_in_process(model, source / "images", tmp_path / "from_16bit")
    for twin in sorted(twins.iterdir()):
        a = np.asarray(Image.open(tmp_path / "from_8bit" / twin.name))
        b = np.asarray(Image.open(tmp_path / "from_16bit" / twin.name))
        truth = np.asarray(Image.open(source / "masks" / twin.name))
        assert (a == truth).mean() > 0.9  # a real segmentation, not a constant mask
        assert (a == b).mean() >= 0.995  # the same mask, up to the rounding of the 8-bit export


def _train(params, data_dir, steps):
    import itertools

    from torch.utils.data import DataLoader

    from ganseg.data.datasets import Endless, PreparedSplit
    from ganseg.segmenter.training import build_training_state, train_epoch

    torch.manual_seed(params.seed)
    stats = read_dataset_stats(data_dir)
    state = build_training_state(params, stats.channels, stats.num_classes, stats.train_frequency)
    batches = Endless(DataLoader(PreparedSplit(data_dir, "train"), batch_size=8, shuffle=True))
    train_epoch(state, itertools.islice(batches, steps), params.train, epoch=1)
    return state.eval_segmenter.eval()
