"""`ganseg bench fewlabels`: arms A-E per label budget, compared with A seed by seed; the image
generator sees only the labelled pairs."""

import json

import numpy as np
import pytest
from PIL import Image

from ganseg.bench.fewlabels import parse_budgets
from ganseg.bench.imagegen import train_image_generator
from ganseg.config import Params
from ganseg.data.datasets import labelled_split
from pipeline.cli import main
from tests.conftest import PROJECT_PARAMS, ROOT, prepare_dataset

TINY = ["--set", "data.synthetic.num_images=30", "--set", "data.synthetic.size=32", "--set", "data.image_size=32",
        "--set", "model.base_channels=8", "--set", "train.epochs=1", "--set", "train.lambda_adv=0",
        "--set", "imagegen.base_channels=8", "--set", "imagegen.disc_channels=8", "--set", "imagegen.epochs=1",
        "--set", "evaluate.flip_tta=false"]


def test_bench_fewlabels_runs_every_arm_per_budget_and_compares_each_with_a(tmp_path, capsys):
    out, figure = tmp_path / "fewlabels.json", tmp_path / "pairs.png"
    code = main(["bench", "fewlabels", "--data", "synthetic", "--labels", "2,all", "--seeds", "2", "--steps", "3",
                 "--generator-steps", "2", "--params", str(ROOT / "params.yaml"), "--out", str(out), "--figure", str(figure), *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    everything = str(report["training_images"])
    assert list(report["budgets"]) == ["2", everything]
    for budget in report["budgets"].values():
        runs = budget["runs"]
        assert [r["config"] for r in runs] == list("ABCDE") * 2 and [r["seed"] for r in runs[::5]] == [42, 43]
        # every arm of a seed trains on the same labelled tiles
        assert len({(r["seed"], r["labelled_tiles"]) for r in runs}) == 2
        mious = {(r["config"], r["seed"]): r["miou"] for r in runs}
        for row in (p for p in budget["paired"] if p["metric"] == "mIoU"):
            assert row["reference"] == "A"
            assert row["differences"] == pytest.approx([mious[row["config"], s] - mious["A", s] for s in (42, 43)])
    few, every = (report["budgets"][key]["runs"][0]["labelled_tiles"] for key in ("2", everything))
    assert few < every
    assert "| 2 | A: real pairs + classical augmentation |" in printed and "| 2 | E: joint" in printed
    with Image.open(figure) as picture:
        assert picture.width > 6 * 32  # mask | real | drawn | deformed | drawn | joint
    assert f"wrote {figure}" in printed


def test_the_image_generator_reads_only_the_tiles_it_is_given(tmp_path):
    """Every other training tile gets a class id the generator cannot take: it trains only if it never reads them."""
    params = Params().with_overrides({"data.synthetic.num_images": 30, "data.synthetic.size": 32, "data.image_size": 32,
                                      "imagegen.base_channels": 8, "imagegen.disc_channels": 8, "imagegen.epochs": 1})
    data_dir = tmp_path / "prepared"
    prepare_dataset(params.data, params.seed, data_dir)
    labelled, rest = labelled_split(data_dir, 0.2, params.seed)
    assert labelled and rest
    masks = np.load(data_dir / "train_masks.npy")
    masks[rest] = 77
    np.save(data_dir / "train_masks.npy", masks)
    with pytest.raises(RuntimeError):  # the poisoned tiles are read when not excluded
        train_image_generator(params, data_dir, steps=4)
    assert train_image_generator(params, data_dir, steps=4, tiles=labelled).global_step == 4


@pytest.mark.parametrize("text, message", [("0,5", "'0'"), ("two", "'two'"), ("2,", "''")])
def test_label_budgets_must_be_positive_counts_or_all(text, message):
    from ganseg.errors import ParamsError

    with pytest.raises(ParamsError, match=message):
        parse_budgets(text)
    assert parse_budgets("2, 5,all") == [2, 5, None]


def test_bench_fewlabels_refuses_arms_without_a_before_any_work(tmp_path, capsys):
    assert main(["bench", "fewlabels", "--params", PROJECT_PARAMS, "--data", str(tmp_path / "nowhere"), "--arms",
                 "B,C"]) == 2
    assert "arms must include A" in capsys.readouterr().err
