import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from ganseg.data.datasets import PreparedSplit
from ganseg.jobs import Worker
from ganseg.jobs.segmenter import OVERLAY_DIR, SegmenterJob, preview_grid
from ganseg.segmenter.training import build_training_state
from pipeline.tracking.epochs import EpochLogger, images_due
from tests.conftest import prepare_dataset


@pytest.mark.parametrize(
    "epoch, every, last, due",
    [(5, 5, 20, True), (6, 5, 20, False), (20, 5, 20, True), (7, 5, 7, True), (3, 1, 9, True), (9, 0, 9, False)],
)
def test_images_every_n_epochs_and_at_the_last(epoch, every, last, due):
    assert images_due(epoch, every, last) is due


@pytest.fixture
def setup(tmp_path, tiny_params):
    params = tiny_params.with_overrides({"train.epochs": 4, "mlflow.log_images_every": 3})
    prepare_dataset(params.data, params.seed, tmp_path / "data", progress=False)
    return params, build_training_state(params, 1, 3), PreparedSplit(tmp_path / "data", "val")


def test_learning_rates_come_from_the_optimizers(setup):
    params, state, _ = setup
    assert state.learning_rates() == {"lr_g": params.train.lr_g, "lr_d": params.train.lr_d}
    state.opt_g.param_groups[0]["lr"], state.opt_d.param_groups[0]["lr"] = 1e-5, 3e-5  # as a schedule sets them
    assert state.learning_rates() == {"lr_g": 1e-5, "lr_d": 3e-5}


def test_preview_grid_has_one_row_per_image_and_three_columns(setup):
    _, state, val_set = setup
    grid = preview_grid(state.segmenter, val_set, count=2)
    strip_height = 32 * 3
    assert grid.width > 3 * 32 * 3 and grid.height > 2 * strip_height
    assert state.segmenter.training  # the preview leaves the training mode as it found it


def test_the_segmenter_jobs_overlays_reach_the_run_under_their_epoch(setup, tmp_path):
    params = setup[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    job = SegmenterJob(params, tmp_path / "data")
    job.start(Worker())
    logger = EpochLogger(uri, run_id, job.score, wait_for_commit=lambda: None)
    for epoch in (3, 4):
        logger.log_picture(job.picture(epoch))
    logged = sorted(f.path for f in client.list_artifacts(run_id, OVERLAY_DIR))
    assert logged == [f"{OVERLAY_DIR}/epoch_0003.png", f"{OVERLAY_DIR}/epoch_0004.png"]
    local = client.download_artifacts(run_id, logged[0], str(tmp_path))
    assert np.asarray(Image.open(local)).ndim == 3
