"""The train_synthetic stage when it has nothing to do, and when its inputs are missing: no Ray needed."""

import json

import pytest

from ganseg.config import Params
from pipeline import train_synthetic


def stage(tmp_path, params: Params):
    return train_synthetic.run(
        params, tmp_path, tmp_path / "results/tune/best_config.json", tmp_path / "image_generator", tmp_path / "models",
        tmp_path / "models_synthetic", tmp_path / "results/synthetic_history.csv", tmp_path / "results/synthetic",
        tmp_path / "results/evaluation/metrics.json",
    )


def test_with_share_0_it_trains_nothing_and_says_so_in_its_outputs(tmp_path, capsys):
    metrics = stage(tmp_path, Params())
    assert metrics["trained"] is False
    assert train_synthetic.OFF in capsys.readouterr().out
    assert json.loads((tmp_path / "results/synthetic/metrics.json").read_text()) == metrics
    assert [p.name for p in (tmp_path / "models_synthetic").iterdir()] == ["README.txt"]


def test_a_tuned_or_set_share_counts_not_just_the_params_file(tmp_path):
    best = tmp_path / "results/tune/best_config.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"overrides": {"train.synthetic.share": 0.5}}))
    with pytest.raises(FileNotFoundError, match="evaluate the train stage's model first"):
        stage(tmp_path, Params())
    assert not (tmp_path / "models_synthetic").exists() and not (tmp_path / "results/synthetic").exists()
