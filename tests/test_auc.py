"""AUC-ROC and AUC-PR of binary tasks: the binned counts, the scores, and their place in evaluation."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from ganseg.config import DataConfig
from ganseg.data.datasets import full_size_test, to_input
from ganseg.data.void import VOID
from ganseg.metrics import BinaryAUC, threshold_confusion
from ganseg.segmenter.evaluation import evaluate_full_size, scored_images, summarise
from ganseg.segmenter.inference import image_logits
from ganseg.segmenter.training import build_networks
from tests.conftest import prepare_dataset, write_pair


def test_perfect_separation_scores_one_and_void_pixels_count_in_neither():
    auc = BinaryAUC()
    truth = torch.tensor([[0, 0, 1, 1, VOID, VOID]])
    probability = torch.tensor([[0.1, 0.3, 0.7, 0.9, 1.0, 0.0]])  # the void pixels, if counted, would spoil it
    auc.update(probability, truth)
    assert auc.scores() == {"auc_roc": 1.0, "auc_pr": 1.0}
    reversed_auc = BinaryAUC()
    reversed_auc.update(1 - probability, truth)
    assert reversed_auc.scores()["auc_roc"] == 0.0


def test_hand_computed_case_streamed_over_two_images():
    # positives 0.35 and 0.8, negatives 0.1 and 0.4: 3 of the 4 (positive, negative) pairs are ranked right
    # -> AUC-ROC 3/4; precision at the recall steps: 1/1 (0.8), 2/3 (0.35) -> AP (1 + 2/3) / 2 = 5/6
    auc = BinaryAUC()
    auc.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 0]))
    auc.update(torch.tensor([0.35, 0.8]), torch.tensor([1, 1]))
    scores = auc.scores()
    assert scores["auc_roc"] == pytest.approx(0.75, abs=1e-9) and scores["auc_pr"] == pytest.approx(5 / 6, abs=1e-6)


def test_matches_sklearn_on_random_images_with_void_pixels_left_out():
    gen = torch.Generator().manual_seed(0)
    auc, kept_p, kept_t = BinaryAUC(), [], []
    for i in range(5):  # five "images" of different sizes, each with void pixels
        truth = (torch.rand(40 + i, 30, generator=gen) < 0.2).long()
        probability = torch.sigmoid(3 * truth + torch.randn(truth.shape, generator=gen) * 2 - 2)
        truth[: 3 * i + 1] = VOID
        auc.update(probability, truth)
        valid = truth != VOID
        kept_p.append(probability[valid].numpy()), kept_t.append(truth[valid].numpy())
    p, t = np.concatenate(kept_p), np.concatenate(kept_t)
    scores = auc.scores()
    assert scores["auc_roc"] == pytest.approx(roc_auc_score(t, p), abs=1e-4)
    assert scores["auc_pr"] == pytest.approx(average_precision_score(t, p), abs=1e-4)


def test_one_pass_counts_equal_torchmetrics_own_binned_update():
    gen = torch.Generator().manual_seed(1)
    reference = BinaryAUROC(thresholds=101)
    # scores on the thresholds themselves, at 0 and 1, and between them; more than the library's vectorised size
    scores = torch.cat([torch.linspace(0, 1, 101), torch.rand(60_000, generator=gen), torch.tensor([0.0, 1.0])])
    target = torch.randint(0, 2, scores.shape, generator=gen)
    reference.update(scores, target)
    assert torch.equal(threshold_confusion(scores, target, reference.thresholds), reference.confmat)


def test_scores_equal_torchmetrics_own_binned_aucs():
    gen = torch.Generator().manual_seed(2)
    target = (torch.rand(30_000, generator=gen) < 0.1).long()
    scores = torch.sigmoid(2 * target + torch.randn(target.shape, generator=gen) * 1.5 - 1) ** 3
    auc = BinaryAUC(thresholds=1001)
    parts = [5000, 12_000, 13_000]  # streamed in unequal parts
    for part_scores, part_target in zip(scores.split(parts), target.split(parts), strict=True):
        auc.update(part_scores, part_target)
    roc, pr = BinaryAUROC(thresholds=1001), BinaryAveragePrecision(thresholds=1001)
    roc.update(scores, target), pr.update(scores, target)
    assert auc.scores() == pytest.approx({"auc_roc": float(roc.compute()), "auc_pr": float(pr.compute())}, abs=1e-9)


def test_a_single_class_has_no_auc():
    auc = BinaryAUC()
    auc.update(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]))
    assert all(math.isnan(v) for v in auc.scores().values())
    assert all(math.isnan(v) for v in BinaryAUC().scores().values())  # nothing scored


def _prepared(tmp_path, class_names, void: bool):
    rng = np.random.default_rng(0)
    for i in range(15):
        mask = rng.integers(0, len(class_names), (20, 24)).astype(np.uint8)
        if void:
            mask[:, :5] = 255
        write_pair(tmp_path / "ds", f"e{i:02d}", rng.integers(0, 255, (20, 24), dtype=np.uint8), mask)
    cfg = DataConfig(source=str(tmp_path / "ds"), class_names=class_names, image_size=16,
                     ignore_index=255 if void else None)
    return prepare_dataset(cfg, 0, tmp_path / "prep", False)


def test_evaluation_ranks_the_softmax_of_class_one_over_annotated_pixels(tmp_path, tiny_params):
    stats = _prepared(tmp_path, ["a", "b"], void=True)
    generator, _ = build_networks(tiny_params, 1, 2)
    generator.eval()
    result = evaluate_full_size(generator, tmp_path / "prep", stats, keep=0, progress=False, flips=True)
    probabilities, truths = [], []
    for image, truth in full_size_test(tmp_path / "prep"):
        x = to_input(torch.from_numpy(image).permute(2, 0, 1)[None])
        probability = image_logits(generator, x, stats.image_size, stats.fit, flips=True)[0].softmax(0)[1]
        valid = truth != VOID
        probabilities.append(probability.numpy()[valid]), truths.append(truth[valid])
    p, t = np.concatenate(probabilities), np.concatenate(truths)
    assert len(p) == int(result.confusion.sum()) > 0
    assert result.auc["auc_roc"] == pytest.approx(roc_auc_score(t, p), abs=1e-4)
    assert result.auc["auc_pr"] == pytest.approx(average_precision_score(t, p), abs=1e-4)
    summary = summarise(result.confusion, stats.class_names, stats.train_frequency, result.boundary_f1, result.auc)
    assert summary["auc_roc"] == round(result.auc["auc_roc"], 6) and summary["auc_pr"] == round(result.auc["auc_pr"], 6)


def test_multi_class_evaluation_has_no_auc_and_val_scores_the_validation_tiles(tmp_path, tiny_params):
    stats = _prepared(tmp_path, ["a", "b", "c"], void=False)
    generator, _ = build_networks(tiny_params, 1, 3)
    result = evaluate_full_size(generator, tmp_path / "prep", stats, keep=0, progress=False, split="val")
    assert result.auc is None
    assert "auc_roc" not in summarise(result.confusion, stats.class_names, stats.train_frequency, result.boundary_f1)
    assert result.num_images == stats.counts["val"] == len(list(scored_images(tmp_path / "prep", "val")))
    assert int(result.confusion.sum()) == stats.counts["val"] * stats.image_size**2


@pytest.mark.parametrize("binary", [True, False])
def test_evaluate_logs_the_aucs_to_the_train_run_for_binary_tasks_only(tmp_path, monkeypatch, binary):
    from pipeline import evaluation
    from pipeline.tracking import runs

    names = ["a", "b"] if binary else ["a", "b", "c"]
    test = {"miou": 0.5, "mdice": 0.6, "pixel_accuracy": 0.7, "iou": dict.fromkeys(names, 0.5),
            "dice": dict.fromkeys(names, 0.6), "boundary_f1": dict.fromkeys(names, 0.4)}
    if binary:
        test |= {"auc_roc": 0.93, "auc_pr": 0.76}
    logged = {}
    monkeypatch.setattr(runs, "log_metrics", lambda client, run_id, metrics, step: logged.update(metrics))

    class Client:
        def log_artifact(self, *args, **kwargs): ...
        def log_artifacts(self, *args, **kwargs): ...

    evaluation._log_to_run(Client(), "run", test, tmp_path)
    aucs = {k: v for k, v in logged.items() if "auc" in k}
    assert aucs == ({"test_auc_roc": 0.93, "test_auc_pr": 0.76} if binary else {})
    assert logged["test_miou"] == 0.5
