"""DRIVE retinal vessels (255 = outside the camera's field of view) with data.ignore_index: prepare, train, evaluate."""

import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from ganseg.data.augment import pair_transform
from ganseg.data.datasets import Endless, PreparedSplit
from ganseg.data.void import VOID
from ganseg.segmenter.evaluation import evaluate_full_size, write_report
from ganseg.segmenter.training import build_training_state, train_epoch
from tests.conftest import prepare_dataset, shared_dataset

STEPS = 4


def test_drive_prepares_trains_and_evaluates_without_the_void_outside_the_field_of_view(tmp_path, tiny_params):
    source = shared_dataset("drive_retina")
    params = tiny_params.with_overrides({
        "data.source": str(source), "data.mask_format": "ids", "data.class_names": ["background", "vessel"],
        "data.ignore_index": 255, "data.channels": 3, "data.fit": "tile", "data.image_size": 64,
        "train.lambda_adv": 0.1, "train.augment.affine_degrees": 10.0,  # the adversarial path and VOID padding too
    })
    prepared = tmp_path / "prepared"
    stats = prepare_dataset(params.data, params.seed, prepared, progress=False)

    # the field of view is about 70 % of each image; vessels about 12.6 % of it (the dataset's notes)
    assert 0.2 < stats.void_fraction["train"] < 0.45
    assert stats.train_frequency[1] == pytest.approx(0.126, abs=0.03)
    train_set = PreparedSplit(prepared, "train", pair_transform(params.train.augment, 64))
    assert set(np.unique(train_set.masks)) == {0, 1, VOID}

    state = build_training_state(params, 3, 2, stats.train_frequency)
    batches = Endless(DataLoader(train_set, batch_size=params.train.batch_size, shuffle=True))
    epoch_means = train_epoch(state, itertools.islice(batches, STEPS), params.train, epoch=1)
    assert math.isfinite(epoch_means["loss_seg"]) and math.isfinite(epoch_means["loss_d"])

    result = evaluate_full_size(state.eval_segmenter, prepared, stats, keep=1, progress=False)
    annotated, void, background = 0, 0, 0
    for stem in (prepared / "test_full/stems.txt").read_text().split():
        truth = np.asarray(Image.open(source / "masks" / f"{stem}.png"))
        annotated, void = annotated + int((truth != 255).sum()), void + int((truth == 255).sum())
        background += int((truth == 0).sum())
    assert result.num_images == stats.test_images > 0
    assert int(result.confusion.sum()) == annotated and result.void_pixels == void > 0
    metrics = write_report(result, stats, tmp_path / "evaluation", num_overlays=1, tolerance=2)
    saved = json.loads((tmp_path / "evaluation/metrics.json").read_text())
    assert saved["scored_pixels"] == annotated and saved["void_pixels"] == void
    # two classes: the threshold-free scores of the vessel probability, over the field of view
    assert saved["auc_positive_class"] == "vessel"
    assert saved["test"]["auc_pr"] == pytest.approx(result.auc["auc_pr"], abs=1e-6)
    # even after a few steps the vessel probability ranks vessels above background better than chance:
    # AUC-ROC 0.5, and AUC-PR the vessels' share of the annotated pixels
    share = background / annotated
    assert 0.5 < saved["test"]["auc_roc"] <= 1 and 1 - share < saved["test"]["auc_pr"] <= 1
    # the majority class, background everywhere: its IoU is its share of the annotated pixels, the vessels' 0
    majority = metrics["test"]["majority_baseline"]
    assert majority == {"miou": pytest.approx(share / 2, abs=1e-6), "pixel_accuracy": pytest.approx(share, abs=1e-6)}
