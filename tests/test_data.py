import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ganseg.config import DataConfig, SplitConfig
from ganseg.contracts import read_dataset_stats
from ganseg.data.datasets import PreparedSplit
from ganseg.data.splits import split_of
from ganseg.data.synthetic import generate_sample
from ganseg.errors import DataError
from tests.conftest import prepare_dataset, shared_dataset, write_pair


def folder_config(folder, **extra):
    return DataConfig(source=str(folder), image_size=16, split=SplitConfig(train=0.34, val=0.33, test=0.33), **extra)


def random_pair(rng, size=(20, 24)):
    image = rng.integers(0, 255, size, dtype=np.uint8)
    mask = (image > 128).astype(np.uint8)
    return image, mask


def test_split_is_stable_when_files_are_added():
    split = SplitConfig()
    before = {f"img{i}": split_of(f"img{i}", split) for i in range(200)}
    after = {f"img{i}": split_of(f"img{i}", split) for i in range(400)}
    assert all(after[k] == v for k, v in before.items())
    shares = pd.Series(after).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.08)


def test_synthetic_is_deterministic_and_has_all_classes():
    a_img, a_mask = generate_sample(7, 3, 64)
    b_img, b_mask = generate_sample(7, 3, 64)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(generate_sample(8, 3, 64)[0], a_img)
    masks = np.stack([generate_sample(7, i, 64)[1] for i in range(10)])
    assert set(np.unique(masks)) == {0, 1, 2}


def test_prepare_synthetic_writes_arrays_manifest_stats(tmp_path, tiny_params):
    stats = prepare_dataset(tiny_params.data, seed=1, out_dir=tmp_path / "prep", progress=False)
    assert sum(stats.counts.values()) == 30
    train = PreparedSplit(tmp_path / "prep", "train")
    image, mask = train[0]
    assert image.shape == (1, 32, 32) and mask.shape == (32, 32) and int(mask.max()) <= 2
    manifest = pd.read_csv(tmp_path / "prep" / "manifest.csv")
    assert len(manifest) == 30 and set(manifest.split) == {"train", "val", "test"}
    assert sum(read_dataset_stats(tmp_path / "prep").train_frequency) == pytest.approx(1.0)


def test_prepare_folder_with_id_masks_and_mixed_formats(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(9):
        image, mask = random_pair(rng)
        write_pair(tmp_path / "ds", f"s{i}", image, mask, image_ext=".tif" if i % 2 else ".png")
    stats = prepare_dataset(folder_config(tmp_path / "ds", class_names=["a", "b"]), 0, tmp_path / "out", False)
    assert sum(stats.counts.values()) == 9
    assert np.load(tmp_path / "out" / "train_images.npy").shape[1:] == (1, 16, 16)


def test_binary_255_masks_and_rgb_jpeg_images(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(9):
        image = rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)
        mask = np.where(image[..., 0] > 128, 255, 0).astype(np.uint8)
        write_pair(tmp_path / "ds", f"p{i}", image, mask, image_ext=".jpg")
    cfg = folder_config(tmp_path / "ds", class_names=["bg", "fg"], mask_format="binary", channels=3)
    prepare_dataset(cfg, 0, tmp_path / "out", False)
    masks = np.load(tmp_path / "out" / "train_masks.npy")
    assert set(np.unique(masks)) <= {0, 1} and masks.max() == 1
    assert np.load(tmp_path / "out" / "train_images.npy").shape[1] == 3


def test_rgb_palette_masks(tmp_path):
    rng = np.random.default_rng(2)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    for i in range(9):
        ids = rng.integers(0, 3, (16, 16))
        write_pair(tmp_path / "ds", f"c{i}", rng.integers(0, 255, (16, 16), dtype=np.uint8), colours[ids])
    cfg = folder_config(
        tmp_path / "ds", mask_format="rgb", palette={"0,0,0": 0, "255,0,0": 1, "0,0,255": 2}
    )
    prepare_dataset(cfg, 0, tmp_path / "out", False)
    assert set(np.unique(np.load(tmp_path / "out" / "train_masks.npy"))) == {0, 1, 2}


def test_tiling_cuts_large_images(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(6):
        write_pair(tmp_path / "ds", f"t{i}", *random_pair(rng, (32, 48)))
    cfg = folder_config(tmp_path / "ds", class_names=["a", "b"], fit="tile")
    stats = prepare_dataset(cfg, 0, tmp_path / "out", False)
    assert sum(stats.counts.values()) == 6 * 2 * 3


def test_tile_stride_overlaps_training_tiles_and_reaches_the_edges_while_other_splits_stay_side_by_side(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(12):
        write_pair(tmp_path / "ds", f"t{i}", *random_pair(rng, (40, 52)))
    side_by_side = prepare_dataset(folder_config(tmp_path / "ds", class_names=["a", "b"], fit="tile"), 0,
                                   tmp_path / "plain", False)
    cfg = folder_config(tmp_path / "ds", class_names=["a", "b"], fit="tile", tile_stride=8)
    strided = prepare_dataset(cfg, 0, tmp_path / "strided", False)
    # 40 x 52 px: side by side 2 x 3 tiles of 16 px; every 8 px and flush with the edges 4 x 6 tiles
    assert strided.counts["train"] == side_by_side.counts["train"] // 6 * 4 * 6
    assert strided.counts["val"] == side_by_side.counts["val"] and strided.counts["test"] == side_by_side.counts["test"]
    manifest = pd.read_csv(tmp_path / "strided" / "manifest.csv")
    first = manifest[(manifest.split == "train") & (manifest["index"] == 0)].stem.item()
    image = np.asarray(Image.open(tmp_path / "ds" / "images" / f"{first}.png"))
    tiles = np.load(tmp_path / "strided" / "train_images.npy")
    assert np.array_equal(tiles[5, 0], image[0:16, 36:52])  # the first row's last tile, flush with the right edge


def test_tile_stride_needs_tiles():
    with pytest.raises(ValueError, match="fit: tile"):
        DataConfig(fit="resize", tile_stride=8)


def test_unpaired_files_are_all_listed(tmp_path):
    rng = np.random.default_rng(4)
    write_pair(tmp_path / "ds", "ok", *random_pair(rng))
    image, mask = random_pair(rng)
    write_pair(tmp_path / "ds", "lonely_image", image, mask)
    (tmp_path / "ds" / "masks" / "lonely_image.png").rename(tmp_path / "ds" / "masks" / "lonely_mask.png")
    with pytest.raises(DataError) as err:
        prepare_dataset(folder_config(tmp_path / "ds", class_names=["a", "b"]), 0, tmp_path / "out", False)
    assert "lonely_image" in str(err.value) and "lonely_mask" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_mask_values_outside_classes_are_rejected(tmp_path):
    rng = np.random.default_rng(5)
    image, _ = random_pair(rng)
    write_pair(tmp_path / "ds", "x", image, np.full(image.shape, 255, np.uint8))
    with pytest.raises(DataError, match="mask_format: binary"):
        prepare_dataset(folder_config(tmp_path / "ds", class_names=["a", "b"]), 0, tmp_path / "out", False)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="is not an existing folder"):
        prepare_dataset(DataConfig(source=str(tmp_path / "nope")), 0, tmp_path / "out", False)


def test_failed_prepare_keeps_previous_output(tmp_path, tiny_params):
    out = tmp_path / "prep"
    prepare_dataset(tiny_params.data, 1, out, False)
    before = (out / "stats.json").read_text()
    with pytest.raises(DataError):
        prepare_dataset(DataConfig(source=str(tmp_path / "nope")), 0, out, False)
    assert (out / "stats.json").read_text() == before


def test_prepare_real_isbi_membranes(tmp_path):
    folder = shared_dataset("isbi2012_membrane")
    cfg = DataConfig(source=str(folder), image_size=128, fit="tile", class_names=["membrane", "cell"], mask_format="binary")
    stats = prepare_dataset(cfg, 0, tmp_path / "out", False)
    assert sum(stats.counts.values()) == 30 * 16
    assert stats.train_frequency[1] == pytest.approx(0.78, abs=0.04)
