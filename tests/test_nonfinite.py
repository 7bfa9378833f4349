"""A NaN or infinite loss stops training with the epoch and step, and the last good checkpoint stays."""

import math
import pickle

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.train import WorkerGroupError

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.errors import NonFiniteLossError
from ganseg.segmenter.training import build_training_state, train_epoch
from pipeline.ray.runtime import last_checkpoint_note, non_finite_cause
from pipeline.storage import location
from tests.conftest import batch, changed, prepare_dataset, weights_of


def test_injected_inf_names_epoch_and_step_and_changes_no_weight(tmp_path, tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    good = batch()
    for epoch in (1, 2):
        train_epoch(state, [good, good], tiny_params.train, epoch=epoch)
        torch.save(checkpoint_of(state, epoch, []), tmp_path / "state.pt")
    saved = (tmp_path / "state.pt").read_bytes()
    poisoned = good[0].float()
    poisoned[0, 0, 5, 5] = math.inf
    before_bad_step = []

    def third_epoch():
        yield good
        before_bad_step.extend(weights_of(state.segmenter, state.discriminator))
        yield poisoned, good[1]

    with pytest.raises(NonFiniteLossError) as err:
        train_epoch(state, third_epoch(), tiny_params.train, epoch=3)
    assert (err.value.epoch, err.value.step) == (3, 2)
    assert "is nan at epoch 3, step 2" in str(err.value)
    assert not changed(before_bad_step, state.segmenter, state.discriminator)
    assert (tmp_path / "state.pt").read_bytes() == saved
    assert restore_checkpoint(build_training_state(tiny_params, 1, 3), tmp_path / "state.pt")["epoch"] == 2


def test_huge_learning_rate_stops_at_a_named_step(tiny_params):
    params = tiny_params.with_overrides({"train.lr_g": 1e30, "train.lambda_adv": 0.0})
    state = build_training_state(params, 1, 3)
    train_epoch(state, [batch()], params.train, epoch=1)  # Adam moves every weight by ~1e30
    with pytest.raises(NonFiniteLossError, match=r"loss_seg is (nan|inf) at epoch 2, step 1 \(lower train.lr_g"):
        train_epoch(state, [batch()], params.train, epoch=2)


def test_the_error_survives_the_trip_back_from_a_ray_worker():
    err = NonFiniteLossError("loss_g", float("inf"), 4, 7, "note")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and (copy.epoch, copy.step) == (4, 7)


def test_the_worker_error_is_found_in_ray_trains_failure():
    diverged = NonFiniteLossError("loss_d", float("nan"), 2, 3)
    failure = WorkerGroupError("worker 1 failed", {0: RuntimeError("collective aborted"), 1: diverged})
    assert non_finite_cause(failure) is diverged
    assert non_finite_cause(WorkerGroupError("oom", {0: MemoryError()})) is None
    assert non_finite_cause(ValueError("not from Ray Train")) is None


def test_note_without_any_checkpoint(tmp_path):
    assert "no epoch had finished" in last_checkpoint_note(location(tmp_path / "never-ran"))


@pytest.mark.integration
def test_real_training_stops_with_epoch_step_and_keeps_the_checkpoint(two_cpu_ray, tmp_path, tiny_params, monkeypatch):
    from pipeline.stages import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # One step per epoch: epoch 1 ends finite and is checkpointed, epoch 2 starts at ~1e30 weights.
    params = tiny_params.with_overrides({
        "train.lr_g": 1e30, "train.lambda_adv": 0.0, "train.epochs": 3, "train.batch_size": 64,
        "runtime.max_failures": 0,  # a NaN comes back on every retry: fail at once
        "data.output_dir": str(tmp_path / "prep"),
    })
    prepare_dataset(params.data, 0, tmp_path / "prep", progress=False)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.json").write_text("previous model")
    with pytest.raises(NonFiniteLossError) as err:
        train.run(params, tmp_path, tmp_path / "best.json", tmp_path / "models", tmp_path / "history.csv")
    assert (err.value.epoch, err.value.step) == (2, 1)
    message = str(err.value)
    assert "loss_seg is nan at epoch 2, step 1" in message and "last good checkpoint (epoch 1) is kept in" in message
    checkpoint = message.split("is kept in ")[1].split(";")[0]
    assert restore_checkpoint(build_training_state(params, 1, 3), tmp_path / checkpoint / "state.pt")["epoch"] == 1
    assert (tmp_path / "models" / "model.json").read_text() == "previous model"
    assert not (tmp_path / "history.csv").exists()
    (run,) = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["1"])
    assert run.info.status == "FAILED"
