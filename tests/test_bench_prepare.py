"""`ganseg bench prepare`: folders it writes itself, each prepared in a fresh process."""

import json
import os

from ganseg.bench.prepare import write_folder
from pipeline.cli import main
from tests.conftest import PROJECT_PARAMS


def test_bench_prepare_reports_every_size_and_cleans_up(tmp_path, capsys):
    out = tmp_path / "prepare.json"
    work = tmp_path / "work"
    work.mkdir()
    args = ["bench", "prepare", "--params", PROJECT_PARAMS, "--images", "50,60", "--size", "64", "--workdir", str(work), "--out", str(out),
            "--cpus", "2", "--set", "data.fit=tile", "--set", "data.image_size=32"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert [(row["images"], row["cpus"]) for row in report["sizes"]] == [(50, None), (50, 2), (60, None), (60, 2)]
    for row in report["sizes"]:
        assert row["tiles"] == 4 * row["images"]  # 64 px images cut into 32 px tiles
        assert row["seconds"] > 0 and 0 < row["peak_rss_mb"] < 2000 and row["mb_per_s"] > 0
        assert 0 <= row["prepare_mb"] <= row["peak_rss_mb"]
    ray_rows = [row for row in report["sizes"] if row["cpus"]]
    assert all(row["ray_start_s"] > 0 and row["workers"] >= 1 and row["worker_peak_mb"] > 0 for row in ray_rows)
    assert "| 60 | Ray Data, 2 CPUs |" in capsys.readouterr().out
    assert list(work.iterdir()) == []


def test_written_folder_holds_the_pairs_asked_for(tmp_path):
    written = write_folder(tmp_path, 11, 48)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i:06d}.png" for i in range(11)]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"{i:06d}.png" for i in range(11)]
    assert written == sum(p.stat().st_size for p in tmp_path.rglob("*.png"))


def test_bench_prepare_refuses_bad_counts_before_any_work(capsys):
    assert main(["bench", "prepare", "--params", PROJECT_PARAMS, "--images", "1000,lots"]) == 2
    assert "--images takes numbers of at least 50 images" in capsys.readouterr().err


def test_bench_prepare_refuses_more_cpus_than_the_machine_has(capsys):
    assert main(["bench", "prepare", "--params", PROJECT_PARAMS, "--cpus", f"1,{len(os.sched_getaffinity(0)) + 1}"]) == 2
    assert "--cpus takes numbers from 1 to" in capsys.readouterr().err
