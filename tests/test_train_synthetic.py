"""The train_synthetic stage when it has nothing to do, and when its inputs are missing: no Ray needed."""

import json

import pytest

from ganseg.config import Params
from ganseg.contracts import ModelCard
from pipeline.console import take_closing
from pipeline.stages import train_synthetic
from tests.conftest import prepare_dataset


def stage(tmp_path, params: Params):
    return train_synthetic.run(
        params, tmp_path, tmp_path / "results/tune/best_config.json", tmp_path / "image_generator", tmp_path / "models",
        tmp_path / "models_synthetic", tmp_path / "results/synthetic_history.csv", tmp_path / "results/synthetic",
        tmp_path / "results/evaluation/metrics.json",
    )


def test_with_share_0_it_trains_nothing_and_says_so_in_its_outputs(tmp_path):
    metrics = stage(tmp_path, Params())
    assert metrics["trained"] is False
    assert take_closing() == train_synthetic.OFF  # on the line that says the stage finished
    assert json.loads((tmp_path / "results/synthetic/metrics.json").read_text()) == metrics
    assert [p.name for p in (tmp_path / "models_synthetic").iterdir()] == ["README.txt"]


def test_a_tuned_or_set_share_counts_not_just_the_params_file(tmp_path):
    best = tmp_path / "results/tune/best_config.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"overrides": {"train.synthetic.share": 0.5}}))
    with pytest.raises(FileNotFoundError, match="evaluate the train stage's model first"):
        stage(tmp_path, Params())
    assert not (tmp_path / "models_synthetic").exists() and not (tmp_path / "results/synthetic").exists()


def test_an_image_generator_for_other_classes_is_refused_before_any_training(tmp_path):
    from ganseg.contracts import ImagegenCard
    from ganseg.errors import CheckpointError
    from ganseg.imagegen.export import export_image_generator
    from ganseg.imagegen.training import build_generator
    from ganseg.segmenter.export import export_model
    from ganseg.segmenter.training import build_networks

    params = Params().with_overrides({"data.synthetic.num_images": 20, "data.output_dir": str(tmp_path / "prepared"),
                                      "train.synthetic.share": 0.5})
    stats = prepare_dataset(params.data, params.seed, tmp_path / "prepared")
    export_model(tmp_path / "models", build_networks(params, stats.channels, stats.num_classes)[0].state_dict(),
                 ModelCard.for_data(params.model, stats))
    (tmp_path / "results/evaluation").mkdir(parents=True)
    (tmp_path / "results/evaluation/metrics.json").write_text(json.dumps({"test": {"miou": 0.5}}))
    other = params.data.model_copy(update={"class_names": ["background", "vessel"]})
    other_stats = stats.model_copy(update={"class_names": other.class_names, "num_classes": 2})
    export_image_generator(tmp_path / "image_generator", build_generator(params.imagegen, 2, 1).state_dict(),
                           ImagegenCard.for_data(params.imagegen, other, other_stats))
    with pytest.raises(CheckpointError, match="draws 1-channel images of classes \\['background', 'vessel'\\]"):
        stage(tmp_path, params)
    assert not (tmp_path / "models_synthetic").exists()
