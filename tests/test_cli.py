"""User mistakes end in `ganseg <stage>: error: ...` and exit status 2, never a traceback."""

import numpy as np
import pytest
import yaml

from ganseg.config import ParamsError
from ganseg.data.sources import BadFileError
from ganseg.errors import CheckpointError, DataError, NonFiniteLossError
from pipeline.cli import main
from pipeline.runtime import ClusterResourcesError
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

    monkeypatch.setattr("pipeline.prepare.run", fail)
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
