"""User mistakes end in `ganseg <stage>: error: ...` and exit status 2, never a traceback."""

import re

import numpy as np
import pytest
import yaml

from ganseg.config import ParamsError
from ganseg.data.sources import BadFileError
from ganseg.errors import CheckpointError, DataError, GansegError, NonFiniteLossError
from pipeline.cli import main
from pipeline.console import closing
from pipeline.ray.runtime import ClusterResourcesError
from tests.conftest import ROOT, write_pair


def params_file(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_bad_params_exit_2_with_the_key(tmp_path, capsys):
    assert main(["prepare", "--params", params_file(tmp_path, {"train": {"lr_g": -1}})]) == 2
    err = capsys.readouterr().err
    assert "ganseg prepare: error:" in err and "train.lr_g" in err and "Traceback" not in err


def test_bad_data_exit_2_listing_the_files(tmp_path, capsys):
    write_pair(tmp_path / "ds", "a", np.zeros((8, 8), np.uint8), np.full((8, 8), 9, np.uint8))
    (tmp_path / "ds" / "images" / "notes.txt").write_text("hello")
    raw = {"data": {"source": str(tmp_path / "ds"), "class_names": ["x", "y"], "output_dir": str(tmp_path / "out")}}
    assert main(["prepare", "--params", params_file(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert "ganseg prepare: error: 2 file(s)" in err
    assert "images/notes.txt: not an image file" in err and "masks/a.png: mask values [9]" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_missing_model_folder_exit_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    args = ["predict", "--params", params_file(tmp_path, {}), "--model", str(tmp_path / "none"),
            "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main(args) == 2
    assert "is not a ganseg model folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error",
    [ParamsError("x"), DataError("x"), BadFileError("a.png", "x"), CheckpointError("x"),
     NonFiniteLossError("loss_g", float("nan"), 1, 1), ClusterResourcesError("x")],
    ids=lambda e: type(e).__name__,
)
def test_every_user_error_is_printed_without_traceback(monkeypatch, capsys, error):
    def fail(params, root):
        raise error

    monkeypatch.setattr("pipeline.stages.prepare.run", fail)
    assert main(["prepare", "--params", str(ROOT / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"ganseg prepare: error: {error}\n"


def test_predict_runs_without_a_params_file_but_an_explicit_one_must_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    args = ["predict", "--model", str(tmp_path / "none"), "--input", "in", "--output", "out"]
    assert main(args) == 2
    assert "is not a ganseg model folder" in capsys.readouterr().err  # got past params loading
    assert main([*args, "--params", "missing.yaml"]) == 2
    assert "params file not found: missing.yaml" in capsys.readouterr().err


def test_a_split_file_outside_the_data_folder_exits_2_and_writes_nothing(tmp_path, capsys):
    write_pair(tmp_path / "ds", "a", np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    (tmp_path / "split.csv").write_text("stem,split\na,train\n")
    raw = {"data": {"source": str(tmp_path / "ds"), "split_file": str(tmp_path / "split.csv"),
                    "class_names": ["x", "y"], "output_dir": str(tmp_path / "out")}}
    assert main(["prepare", "--params", params_file(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert f"data.split_file {tmp_path / 'split.csv'} lies outside data.source" in err
    assert "move the file into the folder" in err and not (tmp_path / "out").exists()


def test_usage_errors_return_2_with_clicks_message(capsys):
    assert main(["prepare", "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["predict", "--output", "out"]) == 2
    assert "Missing option '--input'" in capsys.readouterr().err
    assert main(["bench", "fewlabels", "--data", "synthetic", "--share", "1"]) == 2
    assert "Invalid value for '--share'" in capsys.readouterr().err


def test_help_returns_0_without_running_a_stage(capsys):
    assert main(["prepare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "build data/prepared from the data.source folder" in out and "--set KEY=VALUE" in out
    assert "finished" not in out


def test_set_is_applied_once_over_the_params_file(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr("pipeline.stages.prepare.run", lambda params, root: seen.update(params=params, root=root))
    path = params_file(tmp_path, {"train": {"epochs": 7}})
    assert main(["prepare", "--params", path, "--root", str(tmp_path), "--set", "train.epochs=3"]) == 0
    assert seen == {"params": seen["params"], "root": tmp_path.resolve()} and seen["params"].train.epochs == 3
    assert "ganseg prepare finished in" in capsys.readouterr().out


def test_a_stage_result_shares_the_line_that_says_it_finished_and_a_failure_drops_it(tmp_path, monkeypatch, capsys):
    def prepared(params, root, fail=False):
        closing("prepared 3 tiles")
        if fail:
            raise GansegError("no images")

    monkeypatch.setattr("pipeline.stages.prepare.run", prepared)
    path = params_file(tmp_path, {})
    closing("left by a stage function called outside a command")
    assert main(["prepare", "--params", path, "--root", str(tmp_path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"ganseg prepare finished in [0-9.]+ s: prepared 3 tiles", line)
    monkeypatch.setattr("pipeline.stages.prepare.run", lambda params, root: prepared(params, root, fail=True))
    assert main(["prepare", "--params", path, "--root", str(tmp_path)]) == 2
    assert "prepared 3 tiles" not in capsys.readouterr().out
    monkeypatch.setattr("pipeline.stages.prepare.run", lambda params, root: None)
    assert main(["prepare", "--params", path, "--root", str(tmp_path)]) == 0
    assert "prepared 3 tiles" not in capsys.readouterr().out  # nothing left over from the failed run


@pytest.mark.parametrize("stage, run", [("train", "pipeline.stages.train.run"),
                                        ("train-synthetic", "pipeline.stages.train_synthetic.run")])
def test_train_stages_get_the_params_file_alone_and_set_to_layer_over_the_tuned_config(
        stage, run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen = {}
    monkeypatch.setattr(run, lambda params, *paths, overrides, params_file: seen.update(
        epochs=params.train.epochs, overrides=overrides, params_file=params_file))
    path = params_file(tmp_path, {"train": {"epochs": 7}})
    assert main([stage, "--params", path, "--root", str(tmp_path), "--set", "train.epochs=3"]) == 0
    assert seen == {"epochs": 7, "overrides": ["train.epochs=3"], "params_file": path}
    assert f"ganseg {stage} finished in" in capsys.readouterr().out


def test_bench_errors_name_the_bench_stage(monkeypatch, capsys):
    def fail(*args):
        raise DataError("x")

    monkeypatch.setattr("pipeline.stages.bench.prepare", fail)
    assert main(["bench", "prepare", "--params", str(ROOT / "params.yaml")]) == 2
    assert capsys.readouterr().err == "ganseg bench: error: x\n"
