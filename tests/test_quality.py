"""Full-resolution evaluation, labelled/unlabelled splits and `ganseg bench quality`."""

import json
import os
import time
from statistics import mean, stdev

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ganseg.bench.quality import learning_curves
from ganseg.contracts import read_dataset_stats
from ganseg.data.datasets import (
    Endless,
    full_size_test,
    labelled_frequency,
    labelled_split,
)
from ganseg.data.void import VOID
from ganseg.segmenter.inference import resized_logits, segment_image
from ganseg.segmenter.losses import class_weight_tensor
from ganseg.segmenter.training import build_training_state
from pipeline.cli import main
from tests.conftest import ROOT, prepare_dataset, write_pair


@pytest.fixture
def sized_folder(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(40, 56), (64, 64), (72, 50), (33, 90)]
    for i in range(24):
        height, width = sizes[i % len(sizes)]
        image = rng.integers(0, 255, (height, width), dtype=np.uint8)
        write_pair(tmp_path / "src", f"img_{i:02d}", image, (image > 128).astype(np.uint8))
    return tmp_path / "src"


def test_prepare_keeps_the_test_images_at_their_own_size(tmp_path, tiny_params, sized_folder):
    cfg = tiny_params.data.model_copy(update={"source": str(sized_folder), "class_names": ["dark", "bright"]})
    stats = prepare_dataset(cfg, 0, tmp_path / "out", progress=False)
    full = list(full_size_test(tmp_path / "out"))
    assert stats.fit == "resize" and len(full) == stats.test_images == stats.counts["test"]
    stems = (tmp_path / "out/test_full/stems.txt").read_text().split()
    for stem, (image, mask) in zip(stems, full):
        source = np.asarray(Image.open(sized_folder / "images" / f"{stem}.png"))
        assert image.shape == (*source.shape, 1) and np.array_equal(image[..., 0], source)
        assert np.array_equal(mask, (source > 128).astype(np.uint8))


def test_labelled_split_keeps_whole_images_together(tmp_path, tiny_params, sized_folder):
    cfg = tiny_params.data.model_copy(
        update={"source": str(sized_folder), "class_names": ["dark", "bright"], "fit": "tile", "image_size": 16}
    )
    prepare_dataset(cfg, 0, tmp_path / "out", progress=False)
    manifest = __import__("pandas").read_csv(tmp_path / "out/manifest.csv")
    train = manifest[manifest["split"] == "train"]
    labelled, unlabelled = labelled_split(tmp_path / "out", 0.25, seed=3)
    assert sorted(labelled + unlabelled) == sorted(train["index"])
    stems_of = lambda idx: set(train.set_index("index").loc[idx, "stem"])  # noqa: E731
    assert not stems_of(labelled) & stems_of(unlabelled)
    assert len(stems_of(labelled)) == round(0.25 * train["stem"].nunique())
    assert labelled_split(tmp_path / "out", 0.25, seed=3) == (labelled, unlabelled)  # seeded
    assert labelled_split(tmp_path / "out", 1.0, seed=3)[1] == []


def test_inverse_sqrt_weights_come_from_the_labelled_masks_only(tmp_path, tiny_params):
    """Image i has class 1 in its first i rows and void in its last 2: the labelled share's class 1
    pixel share differs from all training masks', and void pixels count in neither."""
    for i in range(24):
        mask = np.zeros((32, 32), np.uint8)
        mask[:i] = 1
        mask[-2:] = 9
        write_pair(tmp_path / "src", f"img_{i:02d}", np.full((32, 32), 10 * i, np.uint8), mask)
    cfg = tiny_params.data.model_copy(update={"source": str(tmp_path / "src"), "class_names": ["a", "b"],
                                              "ignore_index": 9})
    prepare_dataset(cfg, 0, tmp_path / "out", progress=False)
    params = tiny_params.with_overrides({"data.class_names": ["a", "b"], "data.ignore_index": 9,
                                         "train.class_weights": "inverse_sqrt", "train.semi.label_fraction": 0.25})
    labelled, _ = labelled_split(tmp_path / "out", 0.25, params.seed)
    masks = np.load(tmp_path / "out/train_masks.npy")[labelled]
    by_hand = [(masks == c).sum() / (masks != VOID).sum() for c in (0, 1)]
    assert labelled_frequency(tmp_path / "out", params) == pytest.approx(by_hand)
    state = build_training_state(params, 1, 2, labelled_frequency(tmp_path / "out", params))
    torch.testing.assert_close(state.class_weights, class_weight_tensor("inverse_sqrt", by_hand))
    all_masks = class_weight_tensor("inverse_sqrt", read_dataset_stats(tmp_path / "out").train_frequency)
    assert (state.class_weights - all_masks).abs().max() > 0.01
    everything = params.with_overrides({"train.semi.label_fraction": 1.0})
    assert labelled_frequency(tmp_path / "out", everything) == read_dataset_stats(tmp_path / "out").train_frequency


def test_endless_batches_reshuffle_a_distributed_sampler_every_pass():
    """Under Ray Train with several workers the unlabelled loader has a DistributedSampler, which
    repeats its order unless told each pass's number."""
    items = torch.arange(16)
    sampler = DistributedSampler(items, num_replicas=2, rank=0, shuffle=True, seed=0)
    batches = Endless(DataLoader(items, batch_size=8, sampler=sampler))  # one batch per pass on this rank
    passes = [next(batches) for _ in range(3)]
    assert all(len(set(p.tolist())) == 8 for p in passes)
    assert not torch.equal(passes[0], passes[1]) and not torch.equal(passes[1], passes[2])
    sampler.set_epoch(1)
    assert passes[1].tolist() == list(sampler)


@pytest.mark.parametrize("taken", [0, 3, 5, 8, 12])
@pytest.mark.parametrize("distributed", [False, True])
def test_endless_batches_taken_up_from_a_saved_position_go_on_with_the_same_batches(taken, distributed):
    """Positions inside a pass, at its end (8: two passes of four batches) and before any batch."""
    def loader():
        items = torch.arange(32)
        if distributed:
            return DataLoader(items, batch_size=4, sampler=DistributedSampler(items, num_replicas=2, rank=1, seed=3))
        return DataLoader(items, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))

    through = Endless(loader())
    expected = [next(through).tolist() for _ in range(taken + 10)]
    stopped = Endless(loader())
    for _ in range(taken):
        next(stopped)
    position = stopped.position()
    other_draws = [next(stopped) for _ in range(3)]  # what the stopped run did after saving does not matter
    resumed = Endless(loader())
    resumed.go_to(position)
    assert other_draws and [next(resumed).tolist() for _ in range(10)] == expected[taken:]


def test_resize_models_see_the_whole_image_at_their_training_size():
    seen = []
    probe = nn.Conv2d(1, 2, 1)
    probe.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    logits = resized_logits(probe, torch.rand(1, 1, 70, 130), tile=32)
    assert seen == [(1, 1, 32, 32)] and logits.shape == (1, 2, 70, 130)
    mask = segment_image(probe, np.zeros((70, 130, 1), np.uint8), tile=32, fit="resize")
    assert mask.shape == (70, 130)


def test_bench_quality_writes_a_table_and_json(tmp_path, capsys):
    out = tmp_path / "quality.json"
    started = time.perf_counter()
    code = main([
        "bench", "quality", "--data", "synthetic", "--seeds", "2", "--steps", "4", "--label-fraction", "0.5",
        "--params", str(ROOT / "params.yaml"), "--set", "data.synthetic.num_images=30", "--set", "data.image_size=32",
        "--set", "data.synthetic.size=32", "--set", "model.base_channels=8", "--set", "train.epochs=2",
        "--out", str(out),
    ])
    elapsed = time.perf_counter() - started
    assert code == 0
    printed = capsys.readouterr().out
    assert "| supervised baseline |" in printed and "| semi-supervised, 50% labels |" in printed
    report = json.loads(out.read_text())
    assert [r["config"] for r in report["runs"]] == [
        "supervised baseline", "supervised baseline", "GAN segmenter", "GAN segmenter",
        "supervised, 50% labels", "supervised, 50% labels", "semi-supervised, 50% labels", "semi-supervised, 50% labels",
    ]
    assert [r["seed"] for r in report["runs"][:2]] == [42, 43]
    full, half = report["runs"][0]["labelled_tiles"], report["runs"][4]["labelled_tiles"]
    assert half < full  # tiles of fewer images
    gan_mious = [r["miou"] for r in report["runs"] if r["config"] == "GAN segmenter"]
    gan = report["summary"]["GAN segmenter"]
    assert gan["miou"] == {"mean": pytest.approx(mean(gan_mious)), "std": pytest.approx(stdev(gan_mious)), "n": 2}
    assert f"| GAN segmenter | {mean(gan_mious):.3f} ± {stdev(gan_mious):.3f} |" in printed
    assert set(gan["boundary_f1"]) == set(report["class_names"])
    trained = report["steps"] * report["params"]["train"]["batch_size"]
    assert all(r["images_per_s"] >= trained / elapsed for r in report["runs"])  # no run took longer than the command
    assert all(0 < r["wall_s"] < elapsed for r in report["runs"]) and "wall (s)" in printed
    assert all(0 < r["cpu_s"] <= r["wall_s"] * os.cpu_count() + 1 for r in report["runs"])
    assert report["summary"]["GAN segmenter"]["cpu_s"]["n"] == 2
    scored = report["runs"][0]["scored_images"]
    assert report["split"] == "test" and f"scored (test split): {scored} test images at full size" in printed
    assert "auc_roc" not in report["runs"][0] and "AUC-ROC" not in printed  # three classes: no AUC
    # every config but the baseline against its reference, seed by seed: mIoU only for three classes
    assert [(row["config"], row["reference"], row["metric"]) for row in report["paired"]] == [
        ("GAN segmenter", "supervised baseline", "mIoU"),
        ("supervised, 50% labels", "supervised baseline", "mIoU"),
        ("semi-supervised, 50% labels", "supervised, 50% labels", "mIoU"),
    ]
    semi = report["paired"][2]
    by_seed = {(r["config"], r["seed"]): r["miou"] for r in report["runs"]}
    assert semi["seeds"] == [42, 43] and semi["differences"] == pytest.approx(
        [by_seed["semi-supervised, 50% labels", s] - by_seed["supervised, 50% labels", s] for s in (42, 43)])
    assert "| semi-supervised, 50% labels | supervised, 50% labels | mIoU |" in printed


@pytest.mark.parametrize("flag, value", [("--seeds", "0"), ("--label-fraction", "1.5"), ("--steps", "-3")])
def test_bench_quality_refuses_bad_arguments(flag, value, capsys):
    assert main(["bench", "quality", "--data", "synthetic", flag, value]) == 2
    assert f"Invalid value for '{flag}'" in capsys.readouterr().err


def test_bench_quality_compares_named_variants_on_the_validation_split_of_a_binary_task(tmp_path, sized_folder, capsys):
    out = tmp_path / "quality.json"
    code = main([
        "bench", "quality", "--data", str(sized_folder), "--seeds", "2", "--steps", "2", "--split", "val",
        "--params", str(ROOT / "params.yaml"), "--set", "data.class_names=[dark, bright]", "--set", "data.image_size=32",
        "--set", "model.base_channels=8", "--set", "train.epochs=1", "--set", "evaluate.flip_tta=false",
        "--contender", "lsgan=train.adv_loss=lsgan",
        "--contender", "light=train.lambda_adv=0.01,train.adv_warmup_epochs=0",
        "--out", str(out), "--figure", str(tmp_path / "figures" / "differ.png"),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    # the figure: the baseline against the first variant, drawn where they differ most
    assert report["figure_configs"] == ["supervised baseline", "lsgan"] and "where lsgan and the baseline" in printed
    with Image.open(report["figure"]) as figure:
        assert figure.format == "PNG" and figure.width > 4 * 32
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["differ.png"]  # no partial file left
    assert [c["name"] for c in report["contenders"]] == ["supervised baseline", "lsgan", "light"]
    assert report["runs"][2]["overrides"] == {"train.adv_loss": "lsgan"}
    light = [r for r in report["runs"] if r["config"] == "light"]
    assert light[0]["overrides"] == {"train.lambda_adv": 0.01, "train.adv_warmup_epochs": 0}
    # scored on the validation tiles, and said so
    assert report["split"] == "val" and report["scored"].endswith("validation images resized to 32 px")
    assert all(r["scored_images"] == int(report["scored"].split()[0]) for r in report["runs"])
    assert f"scored (val split): {report['scored']}" in printed
    # two classes: AUCs per run, in the summary and the table
    assert all(0.5 < r["auc_roc"] <= 1 and 0 < r["auc_pr"] <= 1 for r in report["runs"])  # better than chance
    assert report["summary"]["lsgan"]["auc_roc"]["n"] == 2
    assert "| config | mIoU | AUC-ROC | AUC-PR | Dice dark |" in printed and "AUC of bright" in printed
    # each variant against the baseline on mIoU, the foreground Dice and AUC-ROC
    assert [(row["config"], row["reference"], row["metric"]) for row in report["paired"]] == [
        (name, "supervised baseline", metric)
        for name in ("lsgan", "light") for metric in ("mIoU", "Dice bright", "AUC-ROC")
    ]
    runs = {(r["config"], r["seed"]): r for r in report["runs"]}
    auc = report["paired"][5]
    assert auc["seeds"] == [42, 43] and auc["differences"] == pytest.approx(
        [runs["light", s]["auc_roc"] - runs["supervised baseline", s]["auc_roc"] for s in (42, 43)])
    assert auc["low"] < auc["mean"] < auc["high"]  # two seeds: an interval around the mean difference
    assert auc["verdict"] == ("better" if auc["low"] > 0 else "worse" if auc["high"] < 0 else "tie")
    first, second = auc["differences"]
    assert f"| light | supervised baseline | AUC-ROC | {first:+.4f}, {second:+.4f} |" in printed


def test_bench_quality_at_several_budgets_draws_each_configs_learning_curve(tmp_path, sized_folder, capsys):
    out, curve = tmp_path / "curve.json", tmp_path / "curve.png"
    code = main([
        "bench", "quality", "--data", str(sized_folder), "--seeds", "2", "--steps", "4,2", "--split", "val",
        "--params", str(ROOT / "params.yaml"), "--set", "data.class_names=[dark, bright]",
        "--set", "data.image_size=32",
        "--set", "model.base_channels=8", "--set", "train.epochs=1", "--set", "evaluate.flip_tta=false",
        "--out", str(out), "--curve", str(curve),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["steps"] == [2, 4] and "each config at 2, 4 steps" in printed
    names = ["supervised baseline @ 2", "GAN segmenter @ 2", "supervised baseline @ 4", "GAN segmenter @ 4"]
    assert list(dict.fromkeys(r["config"] for r in report["runs"])) == names
    assert [r["steps"] for r in report["runs"]] == [2, 2, 2, 2, 4, 4, 4, 4]
    trained = {r["steps"]: r["images_per_s"] * r["wall_s"] for r in report["runs"]}
    assert trained[4] > trained[2]  # the larger budget trained on more images
    # each budget's GAN row against the baseline of the same budget
    assert {(row["config"], row["reference"]) for row in report["paired"]} == {
        ("GAN segmenter @ 2", "supervised baseline @ 2"), ("GAN segmenter @ 4", "supervised baseline @ 4")}
    curves = learning_curves(report)
    assert set(curves) == {"Dice bright", "AUC-ROC"}
    dice = curves["Dice bright"]["GAN segmenter"]
    assert [steps for steps, _, _ in dice] == [2, 4]
    assert dice[1][1] == pytest.approx(report["summary"]["GAN segmenter @ 4"]["dice"]["bright"]["mean"])
    with Image.open(curve) as picture:
        assert picture.format == "PNG" and picture.width > 400


def test_a_learning_curve_needs_several_budgets(tmp_path, capsys):
    code = main(["bench", "quality", "--data", "synthetic", "--steps", "4", "--curve", str(tmp_path / "c.png")])
    assert code == 2 and "several budgets" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_bench_quality_baseline_only_trains_one_config_and_leaves_no_bar_in_a_log(tmp_path, sized_folder, capsys):
    out = tmp_path / "recipe.json"
    code = main([
        "bench", "quality", "--data", str(sized_folder), "--seeds", "1", "--steps", "3", "--split", "val",
        "--baseline-only", "--params", str(ROOT / "params.yaml"), "--set", "data.class_names=[dark, bright]",
        "--set", "data.image_size=32", "--set", "model.base_channels=8", "--set", "train.epochs=1",
        "--out", str(out),
    ])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(out.read_text())
    assert [run["config"] for run in report["runs"]] == ["supervised baseline"] and report["paired"] == []
    assert "| supervised baseline |" in captured.out and "| against |" not in captured.out
    assert "step/s" not in captured.err  # the steps' bar is for a terminal: a log would get a wall of updates


@pytest.mark.parametrize("extra", [["--contender", "x=train.lambda_adv=0.1"], ["--label-fraction", "0.5"],
                                   ["--figure", "differ.png"]])
def test_baseline_only_refuses_what_needs_a_second_config(extra, tmp_path, capsys):
    code = main(["bench", "quality", "--params", str(ROOT / "params.yaml"), "--data", "synthetic", "--baseline-only",
                 *extra])
    assert code == 2 and "--baseline-only" in capsys.readouterr().err


def two_seeds_of_two_steps(folder) -> list[str]:
    """A `bench quality` of the default configs at its smallest: 2 seeds, 2 steps, scored on val."""
    return ["bench", "quality", "--data", str(folder), "--seeds", "2", "--steps", "2", "--split", "val",
            "--params", str(ROOT / "params.yaml"), "--set", "data.class_names=[dark, bright]",
            "--set", "data.image_size=32", "--set", "model.base_channels=8", "--set", "train.epochs=1",
            "--set", "evaluate.flip_tta=false"]


def test_an_interrupted_bench_quality_resumes_from_its_report_and_still_draws_its_figure(
        tmp_path, sized_folder, capsys, monkeypatch):
    from ganseg.bench import quality

    args = two_seeds_of_two_steps(sized_folder)
    whole, whole_figure = tmp_path / "whole.json", tmp_path / "whole.png"
    assert main([*args, "--out", str(whole), "--figure", str(whole_figure)]) == 0
    expected = [(r["config"], r["seed"], r["miou"]) for r in json.loads(whole.read_text())["runs"]]

    trained, train_and_score = [], quality.train_and_score

    def stopping_at_the_third(params, *rest, **kwargs):
        trained.append(params.seed)
        if len(trained) == 3:
            raise KeyboardInterrupt
        return train_and_score(params, *rest, **kwargs)

    monkeypatch.setattr(quality, "train_and_score", stopping_at_the_third)
    out, figure = tmp_path / "q.json", tmp_path / "differ.png"
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out", str(out), "--figure", str(figure)])
    partial = json.loads(out.read_text())  # written after each run: seed by seed, so a whole pair
    assert partial["complete"] is False and not figure.exists()
    assert [(r["config"], r["seed"]) for r in partial["runs"]] == [("supervised baseline", 42), ("GAN segmenter", 42)]
    capsys.readouterr()

    trained.clear()
    assert main([*args, "--out", str(out), "--figure", str(figure), "--resume"]) == 0
    assert trained == [43, 43]  # only the second seed's pair trained
    printed = capsys.readouterr().out
    assert printed.count("(from the earlier report)") == 2 and "an unfinished benchmark of 2 run(s)" in printed
    report = json.loads(out.read_text())
    assert report["complete"] is True
    assert [(r["config"], r["seed"]) for r in report["runs"]] == [(config, seed) for config, seed, _ in expected]
    assert [r["miou"] for r in report["runs"]] == pytest.approx([miou for _, _, miou in expected], abs=1e-6)
    with Image.open(figure) as picture, Image.open(whole_figure) as uninterrupted:
        # the seed-42 pair drawn from its kept segmenters: what the uninterrupted benchmark drew
        assert picture.format == "PNG" and np.array_equal(np.asarray(picture), np.asarray(uninterrupted))
    assert sorted(p.name for p in (tmp_path / "q-segmenters").iterdir()) == ["GAN_segmenter.pt", "supervised_baseline.pt"]

    # a config whose overrides changed trains again; the baseline is taken
    trained.clear()
    assert main([*args, "--out", str(out), "--resume", "--contender", "GAN segmenter=train.lambda_adv=0.2"]) == 0
    assert trained == [42, 43]
    runs = json.loads(out.read_text())["runs"]
    assert [r["overrides"] for r in runs] == [{"train.lambda_adv": 0.0}] * 2 + [{"train.lambda_adv": 0.2}] * 2

    # another benchmark in the same report is refused, and the report is left as it is
    before = out.read_bytes()
    assert main([*args, "--set", "model.base_channels=4", "--out", str(out), "--resume"]) == 2
    assert "holds a benchmark with another params" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_a_resumed_bench_quality_interrupted_again_keeps_the_earlier_runs_it_has_not_reached(
        tmp_path, sized_folder, monkeypatch):
    from ganseg.bench import quality

    args = two_seeds_of_two_steps(sized_folder)
    out = tmp_path / "q.json"
    assert main([*args, "--baseline-only", "--out", str(out)]) == 0
    baselines = json.loads(out.read_text())["runs"]

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(quality, "train_and_score", interrupted)
    with pytest.raises(KeyboardInterrupt):  # the GAN run of seed 42, the first to train
        main([*args, "--out", str(out), "--resume"])
    partial = json.loads(out.read_text())
    assert partial["complete"] is False
    assert partial["runs"] == baselines  # seed 43's baseline, not reached yet, is still there to be taken


def test_a_run_stopped_in_its_middle_goes_on_from_its_last_epoch_to_the_same_weights(
        tmp_path, sized_folder, capsys, monkeypatch):
    from ganseg.bench import quality

    args = ["bench", "quality", "--data", str(sized_folder), "--seeds", "1", "--steps", "6", "--split", "val",
            "--params", str(ROOT / "params.yaml"), "--set", "data.class_names=[dark, bright]",
            "--set", "data.image_size=32", "--set", "model.base_channels=8", "--set", "train.epochs=3",
            "--set", "train.adv_warmup_epochs=1", "--set", "evaluate.flip_tta=false",
            "--contender", "GAN segmenter=train.lambda_adv=0.1"]
    whole = tmp_path / "whole.json"
    assert main([*args, "--out", str(whole), "--figure", str(tmp_path / "whole.png")]) == 0
    uninterrupted = json.loads(whole.read_text())["runs"]
    assert not (tmp_path / "whole-unfinished").exists()  # a finished benchmark leaves no saved epochs

    gan = 0.1
    epochs, stop_at, train_epoch = [], [(gan, 3)], quality.train_epoch

    def stopping(state, batches, cfg, **kwargs):
        epochs.append((cfg.lambda_adv, kwargs["epoch"]))
        if epochs[-1] in stop_at:
            raise KeyboardInterrupt
        return train_epoch(state, batches, cfg, **kwargs)

    monkeypatch.setattr(quality, "train_epoch", stopping)
    out, figure = tmp_path / "q.json", tmp_path / "differ.png"
    with pytest.raises(KeyboardInterrupt):  # in the GAN's third epoch, after the baseline's run
        main([*args, "--out", str(out), "--figure", str(figure)])
    (saved_file,) = (tmp_path / "q-unfinished").iterdir()
    saved = torch.load(saved_file, weights_only=True)
    assert saved["epoch"] == 2  # two epochs of two steps: two passes of the two batches of 17 tiles
    assert (saved["batches"]["passes"], saved["batches"]["taken"]) == (2, 2)

    epochs.clear()
    stop_at.clear()
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--figure", str(figure), "--resume"]) == 0
    assert epochs == [(gan, 3)]  # the baseline taken from the report, only the GAN's last epoch trained
    assert "resumed after epoch 2" in capsys.readouterr().out
    runs = json.loads(out.read_text())["runs"]
    for key in ("miou", "dice", "boundary_f1"):
        assert [run[key] for run in runs] == [run[key] for run in uninterrupted], key
    assert runs[1]["wall_s"] > saved["train_s"]  # the earlier sitting's seconds count
    resumed, whole_kept = (torch.load(folder / "GAN_segmenter.pt", weights_only=True)
                           for folder in (tmp_path / "q-segmenters", tmp_path / "whole-segmenters"))
    assert resumed.keys() == whole_kept.keys()
    assert all(torch.equal(resumed[key], whole_kept[key]) for key in whole_kept)
    assert not (tmp_path / "q-unfinished").exists()

    # without --resume a saved epoch is not taken: the run trains from its first epoch
    stop_at.append((gan, 3))
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out", str(out)])
    epochs.clear()
    stop_at.clear()
    assert main([*args, "--out", str(out)]) == 0
    assert epochs == [(0.0, 1), (0.0, 2), (0.0, 3), (gan, 1), (gan, 2), (gan, 3)]
