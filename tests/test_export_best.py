"""The exported model is the checkpoint with the best validation score, not the last one: a real
training under Ray Train whose job reports scripted validation scores."""

import pytest
import torch

from ganseg.checkpoints import read_checkpoint, weights_to_export
from ganseg.jobs.segmenter import SegmenterJob
from ganseg.segmenter.export import load_model
from tests.conftest import prepare_dataset

pytestmark = pytest.mark.integration

SCORES = {1: 0.5, 2: 0.9, 3: 0.6}  # the best epoch is the second, not the last


class ScriptedScoreJob(SegmenterJob):
    """The segmenter's job, trained for real, reporting SCORES' validation score for each epoch."""

    def train_epoch(self, epoch: int) -> dict[str, float]:
        return super().train_epoch(epoch) | {self.score: SCORES[epoch]}


def test_the_exported_segmenter_is_the_best_checkpoint_by_validation_score(two_cpu_ray, tmp_path, tiny_params,
                                                                          monkeypatch):
    from pipeline.training import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params.with_overrides({"train.epochs": 3, "data.output_dir": str(tmp_path / "prep")})
    prepare_dataset(params.data, params.seed, tmp_path / "prep", progress=False)
    summary = train(ScriptedScoreJob, params, tmp_path, tmp_path / "models", tmp_path / "history.csv", "segmenter")
    assert (summary["best_epoch"], summary["best_val_miou"]) == (2, 0.9)

    kept = {}
    for path in (tmp_path / "runs").rglob("state.pt"):
        checkpoint = read_checkpoint(path, "segmenter")
        kept[checkpoint["epoch"]] = weights_to_export(checkpoint, "segmenter")
    assert {2, 3} <= set(kept), sorted(kept)  # Ray kept the best and the latest
    exported = load_model(tmp_path / "models")[0].state_dict()
    assert all(torch.equal(exported[key], kept[2][key]) for key in exported)
    assert not all(torch.equal(exported[key], kept[3][key]) for key in exported)
