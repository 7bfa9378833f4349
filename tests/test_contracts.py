"""stats.json and model.json: one typed model each; older files mean what they meant, or are refused clearly."""

import json

import pytest

from ganseg.contracts import (
    MODEL_CARD,
    STATS_FILE,
    read_dataset_stats,
    read_model_card,
    write_dataset_stats,
    write_model_card,
)
from ganseg.data.intensity import IntensityRule
from ganseg.errors import CheckpointError, DataError
from tests.conftest import model_card, prepared_stats


def test_stats_round_trip_keeps_the_keys_prepare_wrote(tmp_path):
    stats = prepared_stats()
    write_dataset_stats(tmp_path, stats)
    saved = json.loads((tmp_path / STATS_FILE).read_text())
    assert "void_fraction" not in saved  # written only with data.ignore_index, as before
    assert saved["intensity"] == {"mode": "dtype", "low": None, "high": None, "percentiles": [1.0, 99.8]}
    assert read_dataset_stats(tmp_path) == stats


def test_stats_older_than_intensity_and_split_files_read_as_they_meant(tmp_path):
    saved = prepared_stats().to_json()
    for later in ("intensity", "split_source", "clipped_share"):
        del saved[later]
    (tmp_path / STATS_FILE).write_text(json.dumps(saved))
    stats = read_dataset_stats(tmp_path)
    assert (stats.intensity, stats.split_source, stats.clipped_share) == (IntensityRule("dtype"), "hash", 0.0)


def test_stats_without_fit_ask_for_prepare_again(tmp_path):
    saved = prepared_stats().to_json()
    del saved["fit"]
    (tmp_path / STATS_FILE).write_text(json.dumps(saved))
    older = r"stats.json: written by an older ganseg \(no fit\): run `ganseg prepare` again"
    with pytest.raises(DataError, match=older):
        read_dataset_stats(tmp_path)


def test_a_card_without_fit_is_refused_and_one_without_intensity_reads_as_dtype(tmp_path, tiny_params):
    saved = model_card(tiny_params).to_json()
    del saved["intensity"]
    (tmp_path / MODEL_CARD).write_text(json.dumps(saved))
    assert read_model_card(tmp_path / MODEL_CARD).intensity == IntensityRule("dtype")
    del saved["fit"]
    (tmp_path / MODEL_CARD).write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match=r"model.json: written by an older ganseg \(no fit\)"):
        read_model_card(tmp_path / MODEL_CARD)


def test_card_round_trip_with_the_train_run(tmp_path, tiny_params):
    card = model_card(tiny_params, best_epoch=3, mlflow_run_id="abc")
    write_model_card(tmp_path, card)
    saved = json.loads((tmp_path / MODEL_CARD).read_text())
    assert list(saved)[:6] == ["model", "in_channels", "num_classes", "class_names", "image_size", "fit"]
    assert "registered_model" not in saved
    assert read_model_card(tmp_path / MODEL_CARD) == card
