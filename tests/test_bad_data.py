"""Every kind of unusable file in a dataset folder: named with its reason (fail) or reported (skip)."""

import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ganseg.config import DataConfig, SplitConfig
from ganseg.data.prepare import SKIPPED_REPORT, prepare_dataset
from ganseg.errors import DataError
from tests.conftest import write_pair

GOOD_PAIRS = 9
PIXEL_LIMIT = 1000  # the good 20x24 pairs stay under it


def config(folder, on_error="fail", **extra):
    return DataConfig(
        source=str(folder), image_size=16, class_names=["a", "b"], on_error=on_error,
        max_image_pixels=PIXEL_LIMIT, split=SplitConfig(train=0.34, val=0.33, test=0.33), **extra,
    )


def grey(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "ds"
    for i in range(GOOD_PAIRS):
        image = grey((20, 24), seed=i)
        write_pair(folder, f"s{i}", image, (image > 128).astype(np.uint8))
    return folder


# Each damage writes real bad files into a good dataset and returns [(file, reason pattern)].
def truncated_image(ds):
    (ds / "images" / "cut.png").write_bytes(png_bytes(grey((20, 24)))[:200])
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(ds / "masks" / "cut.png")
    return [("images/cut.png", "truncated")]


def png_that_is_not_a_png(ds):
    (ds / "images" / "fake.png").write_text("this is not a picture")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(ds / "masks" / "fake.png")
    return [("images/fake.png", "not an image that can be read")]


def text_file_among_images(ds):
    (ds / "images" / "notes.txt").write_text("scanned on Monday")
    return [("images/notes.txt", r"not an image file \(expected .*\.png")]


def image_without_mask(ds):
    Image.fromarray(grey((20, 24))).save(ds / "images" / "lonely.png")
    return [("images/lonely.png", "no usable file with stem 'lonely' in masks/")]


def mask_without_image(ds):
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(ds / "masks" / "orphan.png")
    return [("masks/orphan.png", "no usable file with stem 'orphan' in images/")]


def size_mismatch(ds):
    write_pair(ds, "wide", grey((20, 24)), np.zeros((16, 16), np.uint8))
    return [("images/wide.png", "image is 24x20 px but its mask wide.png is 16x16 px")]


def mask_values_outside_class_map(ds):
    write_pair(ds, "sevens", grey((20, 24)), np.full((20, 24), 7, np.uint8))
    return [("masks/sevens.png", r"mask values \[7\] are not class ids 0..1")]


def same_stem_two_extensions(ds):
    write_pair(ds, "twice", grey((20, 24)), np.zeros((20, 24), np.uint8))
    Image.fromarray(grey((20, 24))).save(ds / "images" / "twice.tif")
    reason = r"2 files in images/ share the stem 'twice' \(twice.png, twice.tif\)"
    return [("images/twice.png", reason), ("images/twice.tif", reason)]


def over_pixel_limit(ds):
    write_pair(ds, "huge", grey((64, 64)), np.zeros((64, 64), np.uint8))  # 4096 px: Pillow's error zone
    reason = f"64x64 = 4,096 pixels, over data.max_image_pixels = {PIXEL_LIMIT:,}"
    return [("images/huge.png", reason), ("masks/huge.png", reason)]


def in_pixel_limit_warning_zone(ds):
    write_pair(ds, "big", grey((40, 40)), np.zeros((20, 24), np.uint8))  # 1600 px: Pillow only warns
    return [("images/big.png", f"40x40 = 1,600 pixels, over data.max_image_pixels = {PIXEL_LIMIT:,}")]


def symlink_outside_dataset(ds):
    elsewhere = ds.parent / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(grey((20, 24))).save(elsewhere / "secret.png")
    (ds / "images" / "link.png").symlink_to(elsewhere / "secret.png")
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(ds / "masks" / "link.png")
    return [
        ("images/link.png", "symlink to .*secret.png, outside the dataset folder"),
        ("masks/link.png", "no usable file with stem 'link' in images/"),
    ]


DAMAGES = [
    truncated_image, png_that_is_not_a_png, text_file_among_images, image_without_mask, mask_without_image,
    size_mismatch, mask_values_outside_class_map, same_stem_two_extensions, over_pixel_limit,
    in_pixel_limit_warning_zone, symlink_outside_dataset,
]


def listed_problems(message):
    """{file: reason} from the indented lines of a DataError."""
    return dict(line.strip().split(": ", 1) for line in message.splitlines() if line.startswith("  "))


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__)
def test_fail_names_the_file_and_reason_and_writes_nothing(dataset, tmp_path, damage):
    expected = damage(dataset)
    with pytest.raises(DataError) as err:
        prepare_dataset(config(dataset), 0, tmp_path / "out", progress=False)
    listed = listed_problems(str(err.value))
    assert sorted(listed) == sorted(file for file, _ in expected)
    for file, reason in expected:
        assert re.search(reason, listed[file]), listed[file]
    assert "data.on_error: skip" in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__)
def test_skip_reports_the_file_and_keeps_the_good_pairs(dataset, tmp_path, damage):
    expected = damage(dataset)
    stats = prepare_dataset(config(dataset, on_error="skip"), 0, tmp_path / "out", progress=False)
    assert sum(stats.counts.values()) == GOOD_PAIRS
    assert stats.skipped_files == len(expected)
    report = pd.read_csv(tmp_path / "out" / SKIPPED_REPORT)
    reasons = {str(dataset / file): reason for file, reason in expected}
    assert sorted(report.file) == sorted(reasons)
    for file, reason in zip(report.file, report.reason):
        assert re.search(reasons[file], reason)
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert set(manifest.stem) == {f"s{i}" for i in range(GOOD_PAIRS)}


def test_fail_lists_every_offending_file_in_one_message(dataset, tmp_path):
    expected = [problem for damage in DAMAGES for problem in damage(dataset)]
    with pytest.raises(DataError) as err:
        prepare_dataset(config(dataset), 0, tmp_path / "out", progress=False)
    assert f"{len(expected)} file(s) in {dataset} cannot be used" in str(err.value)
    assert sorted(listed_problems(str(err.value))) == sorted(file for file, _ in expected)


def test_failed_check_keeps_the_previous_output(dataset, tmp_path):
    prepare_dataset(config(dataset), 0, tmp_path / "out", progress=False)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    truncated_image(dataset)
    with pytest.raises(DataError, match="truncated"):
        prepare_dataset(config(dataset), 0, tmp_path / "out", progress=False)
    assert {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "out"]


def test_clean_folder_writes_an_empty_skip_report(dataset, tmp_path):
    stats = prepare_dataset(config(dataset), 0, tmp_path / "out", progress=False)
    assert stats.skipped_files == 0
    assert pd.read_csv(tmp_path / "out" / SKIPPED_REPORT).empty


def test_rgb_colour_not_in_palette(tmp_path):
    colours = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    for i in range(GOOD_PAIRS):
        write_pair(tmp_path / "ds", f"c{i}", grey((16, 16), i), colours[grey((16, 16), i) % 2])
    stray = colours[np.zeros((16, 16), int)]
    stray[3, 4] = (0, 200, 0)
    write_pair(tmp_path / "ds", "green", grey((16, 16)), stray)
    cfg = config(tmp_path / "ds", mask_format="rgb", palette={"0,0,0": 0, "255,0,0": 1})
    with pytest.raises(DataError) as err:
        prepare_dataset(cfg, 0, tmp_path / "out", progress=False)
    assert listed_problems(str(err.value)) == {"masks/green.png": "mask colours [(0, 200, 0)] are not in data.palette"}


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_empty_folders_are_an_error_whatever_the_policy(tmp_path, on_error):
    (tmp_path / "ds").mkdir()
    with pytest.raises(DataError, match="expected sub-folders images/ and masks/; images/ is missing"):
        prepare_dataset(config(tmp_path / "ds", on_error), 0, tmp_path / "out", progress=False)
    (tmp_path / "ds" / "images").mkdir()
    (tmp_path / "ds" / "masks").mkdir()
    with pytest.raises(DataError, match="images/ and masks/ are empty"):
        prepare_dataset(config(tmp_path / "ds", on_error), 0, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_skip_with_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "masks").mkdir()
    truncated_image(tmp_path / "ds")
    with pytest.raises(DataError, match="No usable pair is left"):
        prepare_dataset(config(tmp_path / "ds", "skip"), 0, tmp_path / "out", progress=False)


def test_symlinks_inside_the_dataset_are_followed(dataset, tmp_path):
    extra = dataset / "extra"
    extra.mkdir()
    image = grey((20, 24), 99)
    Image.fromarray(image).save(extra / "real.png")
    (dataset / "images" / "alias.png").symlink_to("../extra/real.png")
    Image.fromarray((image > 128).astype(np.uint8)).save(dataset / "masks" / "alias.png")
    (tmp_path / "linked_ds").symlink_to(dataset)  # a data.source that is itself a link
    stats = prepare_dataset(config(tmp_path / "linked_ds"), 0, tmp_path / "out", progress=False)
    assert sum(stats.counts.values()) == GOOD_PAIRS + 1


def test_pixel_limit_does_not_leak_into_pillow(dataset, tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    over_pixel_limit(dataset)
    with pytest.raises(DataError):
        prepare_dataset(config(dataset), 0, tmp_path / "out", progress=False)
    assert Image.MAX_IMAGE_PIXELS == before


def test_images_folder_linked_outside_the_dataset_is_refused(tmp_path):
    write_pair(tmp_path / "elsewhere", "a", grey((8, 8)), np.zeros((8, 8), np.uint8))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "images").symlink_to(tmp_path / "elsewhere" / "images")
    (tmp_path / "ds" / "masks").mkdir()
    with pytest.raises(DataError, match="images: links to .*elsewhere/images, outside the dataset folder"):
        prepare_dataset(config(tmp_path / "ds", "skip"), 0, tmp_path / "out", progress=False)
