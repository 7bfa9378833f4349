"""`ganseg bench predict`: every image size with flips off and on, each in a fresh process."""

import json

import pytest

from pipeline.cli import main
from tests.conftest import PROJECT_PARAMS, ROOT

TINY = ["--params", str(ROOT / "params.yaml"), "--set", "data.image_size=32", "--set", "model.base_channels=8",
        "--set", "model.depth=2"]


def test_bench_predict_times_every_case_and_reports_its_memory(tmp_path, capsys):
    out = tmp_path / "predict.json"
    assert main(["bench", "predict", "--sizes", "40x2,100x1", "--ray-workers", "none", "--out", str(out), *TINY]) == 0
    report = json.loads(out.read_text())
    cases = [(c["size"], c["count"], c["flips"]) for c in report["cases"]]
    assert cases == [(40, 2, False), (40, 2, True), (100, 1, False), (100, 1, True)]
    for case in report["cases"]:
        assert case["tile"] == 32 and case["seconds"] > 0
        assert 0 <= case["peak_extra_mb"] <= case["peak_mb"]
    assert "| 100x100 | 1 | on |" in capsys.readouterr().out


@pytest.mark.integration
def test_bench_predict_runs_a_folder_in_process_and_on_ray_workers_with_the_same_masks(tmp_path, capsys):
    out = tmp_path / "predict.json"
    args = ["bench", "predict", "--sizes", "40x1", "--folder", "48x6", "--ray-workers", "1,2", "--out", str(out)]
    assert main([*args, *TINY]) == 0
    folder = json.loads(out.read_text())["folder"]
    assert [run["workers"] for run in folder["runs"]] == [0, 1, 2]
    assert folder["runs"][0]["pixels_unlike_this_process"] == 0 and folder["count"] == 6
    printed = capsys.readouterr().out
    assert "Ray Data: 6 images on 2 worker(s), 1 node(s)" in printed and "| Ray Data, 2 worker(s) |" in printed


def test_bench_predict_refuses_bad_sizes_before_any_work(capsys):
    assert main(["bench", "predict", "--params", PROJECT_PARAMS, "--sizes", "512x8,big"]) == 2
    assert "--sizes takes SIZExCOUNT items such as 512x8, not 'big'" in capsys.readouterr().err
    assert main(["bench", "predict", "--params", PROJECT_PARAMS, "--ray-workers", "1,99"]) == 2
    assert "--ray-workers takes numbers from 1 to" in capsys.readouterr().err


def test_peak_memory_counts_from_the_reset_on():
    import numpy as np

    from ganseg.memory import peak_mb, reset_peak

    big = np.ones(200 * 2**20 // 8)  # 200 MB, resident
    del big
    before = reset_peak()  # the 200 MB peak above no longer counts
    assert peak_mb() < before + 50
    block = np.ones(100 * 2**20 // 8)
    assert peak_mb() - before >= 90
    del block
