"""The image generator's checkpoints, judging on a prepared split, and its bench."""

import json

import numpy as np
import pytest
import torch

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.config import ImagegenConfig, Params
from ganseg.imagegen.evaluation import grid_rows, judge_generator
from ganseg.imagegen.training import build_state, train_step
from ganseg.segmenter.networks import UNet
from ganseg.viz import sample_grid
from pipeline.cli import main
from tests.conftest import PROJECT_PARAMS, ROOT, batch, prepare_dataset, same_state

SMALL = ImagegenConfig(base_channels=8, disc_channels=8, depth=2, noise_dim=4, ema_decay=0.9)


def test_a_checkpoint_restores_both_networks_optimisers_and_the_moving_average(tmp_path):
    torch.manual_seed(0)
    state = build_state(SMALL, 3, 1)
    image, mask = batch(size=16)
    train_step(state, image, mask, SMALL)
    torch.save(checkpoint_of(state, 1, [{"epoch": 1}]), tmp_path / "state.pt")
    expected_draw = torch.rand(4)  # what the random state saved above draws next
    fresh = build_state(SMALL, 3, 1)
    checkpoint = restore_checkpoint(fresh, tmp_path / "state.pt")
    assert checkpoint["epoch"] == 1 and fresh.global_step == 1
    for a, b in [(state.generator, fresh.generator), (state.discriminator, fresh.discriminator),
                 (state.ema.module, fresh.ema.module)]:
        assert same_state(a.state_dict(), b.state_dict())
    for optimiser in ("opt_g", "opt_d"):  # Adam's step counts and moments, value by value
        assert getattr(fresh, optimiser).state_dict()["state"], optimiser
        assert same_state(getattr(fresh, optimiser).state_dict(), getattr(state, optimiser).state_dict()), optimiser
    assert torch.equal(torch.rand(4), expected_draw)
    # the next step from either is the same step
    torch.manual_seed(1)
    train_step(state, image, mask, SMALL)
    torch.manual_seed(1)
    train_step(fresh, image, mask, SMALL)
    assert all(torch.equal(x, y) for x, y in zip(state.generator.state_dict().values(),
                                                  fresh.generator.state_dict().values()))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    params = Params().with_overrides({"data.synthetic.num_images": 60, "data.synthetic.size": 32, "data.image_size": 32})
    data_dir = tmp_path_factory.mktemp("data") / "prepared"
    stats = prepare_dataset(params.data, params.seed, data_dir)
    return data_dir, stats


@pytest.mark.parametrize("generator, diverse", [("spade", True), ("pix2pix", False)])
def test_judging_reports_the_ratio_of_generated_to_real_and_diversity_only_with_noise(prepared, generator, diverse):
    data_dir, stats = prepared
    torch.manual_seed(0)
    cfg = SMALL.model_copy(update={"generator": generator})
    drawer = build_state(cfg, stats.num_classes, stats.channels).eval_generator
    judge = UNet(1, stats.num_classes, base=8, depth=2).eval()
    figures, drawn = judge_generator(drawer, judge, data_dir, stats.num_classes, samples=3, seed=5)
    assert drawn.shape == (stats.counts["test"], 3, 1, 32, 32) and drawn.dtype == torch.uint8
    assert figures["judge_miou_ratio"] == pytest.approx(figures["judge_miou_generated"] / figures["judge_miou_real"])
    assert (figures["diversity"] > 0.01) is diverse
    assert figures["memorisation_ratio"] == pytest.approx(
        figures["nearest_train_generated"] / figures["nearest_train_real"])
    again, _ = judge_generator(drawer, judge, data_dir, stats.num_classes, samples=3, seed=5)
    assert again == figures  # the same seed, the same figures


def test_the_sample_grid_has_a_row_per_mask_and_a_column_per_sample():
    masks = np.zeros((2, 16, 16), np.uint8)
    real = np.zeros((2, 1, 16, 16), np.uint8)
    drawn = np.full((2, 3, 1, 16, 16), 255, np.uint8)
    grid = sample_grid(masks, real, drawn, scale=1)
    assert grid.size == (5 * 16 + 4 * 4, 2 * 16 + 4 + 16)  # 5 panels, 4 gaps; 2 rows, a gap, the titles


def test_bench_imagegen_prints_every_variant_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "imagegen", "--data", "synthetic", "--steps", "2", "--judge-steps", "2", "--seeds", "2",
                 "--variants", "spade+patch,pix2pix", "--out", str(out), "--grids", str(tmp_path / "grids"),
                 "--params", str(ROOT / "params.yaml"),
                 "--set", "data.synthetic.num_images=40", "--set", "data.synthetic.size=32", "--set", "data.image_size=32",
                 "--set", "imagegen.base_channels=8", "--set", "imagegen.disc_channels=8", "--set", "imagegen.epochs=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| spade+patch |" in printed and "| pix2pix |" in printed and "| pix2pix | spade+patch | diversity |" in printed
    report = json.loads(out.read_text())
    assert [run["config"] for run in report["runs"]] == ["spade+patch"] * 2 + ["pix2pix"] * 2
    assert all(run["diversity"] == 0 for run in report["runs"] if run["config"] == "pix2pix")
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["pix2pix.png", "spade+patch.png"]


def test_bench_imagegen_refuses_an_unknown_variant_before_training(tmp_path, capsys):
    assert main(["bench", "imagegen", "--params", PROJECT_PARAMS, "--data", str(tmp_path / "nowhere"),
                 "--variants", "spade+patch,vqgan"]) == 2
    assert "unknown variant(s) vqgan; known: spade+patch, spade+oasis, pix2pix" in capsys.readouterr().err


def test_grids_show_the_most_annotated_masks_in_split_order():
    masks = np.zeros((5, 4, 4), np.uint8)
    masks[0] = 255  # all void: outside a field of view
    masks[2, :2] = 255
    assert grid_rows(masks, 3) == [1, 3, 4]
    assert grid_rows(masks, 9) == [0, 1, 2, 3, 4]
