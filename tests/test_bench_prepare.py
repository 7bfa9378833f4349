"""`ganseg bench prepare`: folders it writes itself, each prepared in a fresh process."""

import json

from ganseg.bench.prepare import write_folder
from pipeline.cli import main


def test_bench_prepare_reports_every_size_and_cleans_up(tmp_path, capsys):
    out = tmp_path / "prepare.json"
    work = tmp_path / "work"
    work.mkdir()
    args = ["bench", "prepare", "--images", "50,60", "--size", "64", "--workdir", str(work), "--out", str(out),
            "--set", "data.fit=tile", "--set", "data.image_size=32"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert [row["images"] for row in report["sizes"]] == [50, 60]
    for row in report["sizes"]:
        assert row["tiles"] == 4 * row["images"]  # 64 px images cut into 32 px tiles
        assert row["seconds"] > 0 and 0 < row["peak_rss_mb"] < 2000 and row["mb_per_s"] > 0
    assert "| 60 |" in capsys.readouterr().out
    assert list(work.iterdir()) == []


def test_written_folder_holds_the_pairs_asked_for(tmp_path):
    written = write_folder(tmp_path, 11, 48)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i:06d}.png" for i in range(11)]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"{i:06d}.png" for i in range(11)]
    assert written == sum(p.stat().st_size for p in tmp_path.rglob("*.png"))


def test_bench_prepare_refuses_bad_counts_before_any_work(capsys):
    assert main(["bench", "prepare", "--images", "1000,lots"]) == 2
    assert "--images takes numbers of at least 50 images" in capsys.readouterr().err
