"""Photos with an EXIF orientation are used the way every viewer shows them (and masks are drawn on)."""

import numpy as np
from PIL import Image

from ganseg.config import DataConfig
from ganseg.data.sources import read_image
from ganseg.segmenter.export import export_model
from ganseg.segmenter.training import build_networks
from tests.conftest import model_card, predict_in_process, prepare_dataset

ROTATE_90_CW_TO_VIEW = 6  # EXIF orientation: the stored pixels are turned 90° counter-clockwise


def displayed_photo():
    """30 rows x 20 columns as shown: a bright top band over a dark rest."""
    view = np.full((30, 20, 3), 40, np.uint8)
    view[:10] = 220
    return view


def save_turned_jpeg(path, view):
    exif = Image.Exif()
    exif[0x0112] = ROTATE_90_CW_TO_VIEW
    Image.fromarray(np.rot90(view)).save(path, quality=95, exif=exif)  # stored 20 rows x 30 columns


def test_images_are_read_in_their_displayed_orientation(tmp_path):
    save_turned_jpeg(tmp_path / "photo.jpg", displayed_photo())
    assert np.asarray(Image.open(tmp_path / "photo.jpg")).shape[:2] == (20, 30)
    image = read_image(tmp_path / "photo.jpg", channels=3)
    assert image.shape == (30, 20, 3)
    assert image[:10].mean() > 200 and image[10:].mean() < 60


def test_photos_with_masks_drawn_on_the_view_prepare_and_predict_as_shown(tmp_path, tiny_params):
    source = tmp_path / "photos"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    view = displayed_photo()
    for stem in ("a", "b", "c"):
        save_turned_jpeg(source / "images" / f"{stem}.jpg", view)
        Image.fromarray((view[..., 0] > 128).astype(np.uint8)).save(source / "masks" / f"{stem}.png")
    (tmp_path / "split.csv").write_text("stem,split\na,train\nb,val\nc,test\n")
    cfg = DataConfig(source=str(source), split_file=str(tmp_path / "split.csv"), channels=3, image_size=16,
                     class_names=["dark", "bright"])
    prepare_dataset(cfg, 0, tmp_path / "out", progress=False)  # a size mismatch before orientation was applied
    test_image = np.asarray(Image.open(tmp_path / "out/test_full/images/00000.png"))
    assert test_image.shape == (30, 20, 3) and test_image[:10].mean() > 200

    params = tiny_params.with_overrides({"data.channels": 3})
    generator, _ = build_networks(params, 3, 2)
    card = model_card(params, class_names=("dark", "bright"), channels=3, image_size=16, fit="resize")
    export_model(tmp_path / "model", generator.state_dict(), card)
    predict_in_process(tmp_path / "model", source / "images", tmp_path / "masks")
    assert np.asarray(Image.open(tmp_path / "masks" / "a.png")).shape == (30, 20)
