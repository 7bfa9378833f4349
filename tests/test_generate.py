"""`generate_folder`: masks in, a dataset folder of drawn images beside copies of the masks out."""

import re

import numpy as np
import pytest
from PIL import Image

from ganseg.config import DataConfig, ImagegenConfig
from ganseg.contracts import ImagegenCard
from ganseg.errors import DataError
from ganseg.imagegen.export import export_image_generator, load_image_generator
from ganseg.imagegen.generate import generate_folder
from ganseg.imagegen.training import build_generator
from tests.conftest import prepare_dataset

CLASSES = ["background", "cell", "edge"]


@pytest.fixture
def model_dir(tmp_path):
    cfg = ImagegenConfig(base_channels=8, depth=2, noise_dim=4)
    generator = build_generator(cfg, len(CLASSES), 1)
    card = ImagegenCard(imagegen=cfg, channels=1, class_names=CLASSES, image_size=32, ignore_index=9)
    export_image_generator(tmp_path / "model", generator.state_dict(), card)
    return tmp_path / "model"


@pytest.fixture
def masks_dir(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, shape in (("a", (32, 32)), ("odd", (30, 45))):
        ids = rng.integers(0, 3, shape).astype(np.uint8)
        ids[0] = 9  # void
        Image.fromarray(ids).save(folder / f"{stem}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_each_mask_gives_k_images_of_its_own_size_beside_a_copy_of_it(model_dir, masks_dir, tmp_path, capsys):
    result = generate_folder(model_dir, masks_dir, tmp_path / "out", samples=2, seed=1)
    assert result["images"] == 4 and list(result["failed"]) == ["broken.png"]
    assert "skipped broken.png" in capsys.readouterr().out
    images = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert images == ["a_0.png", "a_1.png", "odd_0.png", "odd_1.png"]
    with Image.open(tmp_path / "out" / "images" / "odd_1.png") as image:
        assert image.size == (45, 30) and image.mode == "L"
    assert (tmp_path / "out" / "masks" / "odd_0.png").read_bytes() == (masks_dir / "odd.png").read_bytes()
    first, second = (np.asarray(Image.open(tmp_path / "out" / "images" / f"a_{k}.png")) for k in (0, 1))
    assert not np.array_equal(first, second)  # the noise makes each sample differ


def test_the_same_seed_draws_the_same_images(model_dir, masks_dir, tmp_path):
    for name in ("x", "y"):
        generate_folder(model_dir, masks_dir, tmp_path / name, samples=1, seed=5)
    for stem in ("a_0", "odd_0"):
        assert (tmp_path / "x" / "images" / f"{stem}.png").read_bytes() == (tmp_path / "y" / "images" / f"{stem}.png").read_bytes()


def test_the_output_prepares_as_a_dataset_with_the_same_data_settings(model_dir, masks_dir, tmp_path):
    (masks_dir / "broken.png").unlink()
    generate_folder(model_dir, masks_dir, tmp_path / "out", samples=12)
    cfg = DataConfig(source=str(tmp_path / "out"), class_names=CLASSES, ignore_index=9, image_size=16, fit="tile")
    stats = prepare_dataset(cfg, 0, tmp_path / "prepared")
    assert sum(stats.counts.values()) > 0 and stats.num_classes == 3


def test_a_folder_with_files_is_refused_and_left_alone(model_dir, masks_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already holds files"):
        generate_folder(model_dir, masks_dir, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_folder_without_a_card_is_named(tmp_path, masks_dir):
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(tmp_path))} is not a ganseg image generator folder"):
        load_image_generator(tmp_path)


def test_ganseg_generate_writes_the_folder_and_names_a_wrong_model_folder(model_dir, masks_dir, tmp_path, capsys):
    from pipeline.cli import main

    args = ["generate", "--masks", str(masks_dir), "--samples", "2", "--root", str(tmp_path)]
    assert main([*args, "--model", str(model_dir), "--output", str(tmp_path / "out")]) == 0
    assert "wrote 4 images from 2 masks" in capsys.readouterr().out
    assert main([*args, "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "other")]) == 2
    assert f"{tmp_path / 'nowhere'} is not a ganseg image generator folder" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
