"""A dataset the project has never seen, used through one edit of params.yaml (its data section):
RGB JPEG images of many sizes with 0/255 PNG masks, through prepare, train, evaluate and predict."""

import json

import numpy as np
import pytest
from PIL import Image

from ganseg.contracts import read_dataset_stats
from ganseg.viz import strip_scale
from tests.conftest import write_pair
from tests.e2e import TINY, clean_env, copy_project, run

pytestmark = pytest.mark.integration

SIZES = [(48, 64), (90, 70), (128, 128), (61, 150), (100, 52), (77, 77), (140, 96), (56, 120)]


def blob_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Orange discs (the class of interest, 255 in the mask) on a noisy blue-grey background."""
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(2, 5)):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(6, 16)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    image = np.where(mask[..., None], [230, 140, 40], [60, 80, 110]) + rng.normal(0, 20, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("unseen") / "shapes"
    for i in range(40):
        height, width = SIZES[i % len(SIZES)]
        write_pair(folder, f"shape_{i:03d}", *blob_pair(rng, height, width), image_ext=".jpg")
    return folder


def test_one_params_edit_runs_the_stages_at_each_images_own_size(tmp_path, unseen):
    data_section = {  # the one edit: where the data is and what its files hold
        "data.source": str(unseen),
        "data.channels": 3,
        "data.mask_format": "binary",
        "data.class_names": ["background", "disc"],
    }
    repo = copy_project(tmp_path / "repo", TINY | {"train.epochs": 3} | data_section)
    env = clean_env()
    for stage in ("prepare", "train", "evaluate"):
        run(["ganseg", stage], repo, env)
    stats = read_dataset_stats(repo / "data/prepared")
    assert stats.channels == 3 and stats.class_names == ["background", "disc"]
    metrics = json.loads((repo / "results/evaluation/metrics.json").read_text())
    full = [Image.open(f) for f in sorted((repo / "data/prepared/test_full/images").glob("*.png"))]
    assert len({f.size for f in full}) > 1  # the test images really differ in size
    assert metrics["num_test_images"] == stats.test_images == len(full)
    assert metrics["scored_pixels"] == sum(f.width * f.height for f in full)  # every pixel, at its own size
    # each overlay strip (image | truth | prediction) shows its test image at its own size (enlarged for viewing)
    strips = [Image.open(s) for s in sorted((repo / "results/evaluation/overlays").glob("*.png"))]
    assert strips and all(s.height == f.height * strip_scale(f.height) for s, f in zip(strips, full))

    new_images = tmp_path / "new"
    new_images.mkdir()
    Image.fromarray(blob_pair(rng := np.random.default_rng(9), 83, 211)[0]).save(new_images / "wide.jpg")
    Image.fromarray(blob_pair(rng, 300, 41)[0]).save(new_images / "tall.jpg")
    run(["ganseg", "predict", "--input", str(new_images), "--output", str(tmp_path / "masks")], repo, env)
    assert Image.open(tmp_path / "masks/wide.png").size == (211, 83)
    assert Image.open(tmp_path / "masks/tall.png").size == (41, 300)
