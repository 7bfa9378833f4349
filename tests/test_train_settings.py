"""What the train stage trains with: defaults < params file < tuned best config < --set."""

import json

import yaml

from ganseg.config import Params
from pipeline.cli import main
from pipeline.settings import layered_params

TUNED = {"train.lr_g": 0.0031, "train.lambda_adv": 0.03}
FROM = "results/tune/best_config.json"


def test_set_wins_over_the_tuned_value_which_wins_over_the_file():
    file_params = Params.model_validate({"train": {"lambda_adv": 0.05, "lr_g": 0.002, "epochs": 7}})
    effective, lines = layered_params(file_params, TUNED, ["train.lambda_adv=0", "train.epochs=3"], FROM)
    assert effective.train.lambda_adv == 0 and effective.train.lr_g == 0.0031 and effective.train.epochs == 3
    assert effective.train.lr_d == file_params.train.lr_d  # untouched: the file's (here the default)
    assert lines == [
        f"train.lr_g = 0.0031 (tuned: {FROM})",
        "train.lambda_adv = 0 (--set)",
        "train.epochs = 3 (--set)",
    ]


def test_values_equal_to_the_file_are_not_listed():
    file_params = Params.model_validate({"train": {"lambda_adv": 0.03, "augment": {"flips": False}}})
    effective, lines = layered_params(file_params, TUNED, ["train.augment.flips=false"], FROM)
    assert effective.train.lambda_adv == 0.03 and not effective.train.augment.flips
    assert lines == [f"train.lr_g = 0.0031 (tuned: {FROM})"]


def test_without_a_tune_only_set_applies():
    effective, lines = layered_params(Params(), {}, ["train.augment.flips=false"], FROM)
    assert not effective.train.augment.flips and lines == ["train.augment.flips = false (--set)"]


def test_set_inside_a_section_the_file_leaves_unset():
    effective, lines = layered_params(Params(), {}, ["runtime.fault_injection.at_epoch=3"], FROM)
    assert effective.runtime.fault_injection.at_epoch == 3
    assert lines == ["runtime.fault_injection.at_epoch = 3 (--set)"]


def test_train_stage_prints_the_differences_first(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lambda_adv": 0.05}}))
    (tmp_path / "results/tune").mkdir(parents=True)
    (tmp_path / FROM).write_text(json.dumps({"overrides": TUNED}))
    # No prepared data: the stage stops with exit status 2 after announcing its settings.
    args = ["train", "--root", str(tmp_path), "--params", str(tmp_path / "params.yaml"), "--set", "train.lambda_adv=0"]
    assert main(args) == 2
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == (
        f"settings that differ from {tmp_path / 'params.yaml'}: train.lr_g = 0.0031 (tuned: {FROM});"
        " train.lambda_adv = 0 (--set)"
    )
    assert "is not a prepared dataset" in out.err
