import math
import time

import torch
from torch.utils.data import DataLoader

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.data.datasets import PreparedSplit, shard_indices, to_input
from ganseg.data.prepare import prepare_dataset
from ganseg.export import export_model, load_model
from ganseg.segmenter.inference import confusion_over
from ganseg.segmenter.training import build_training_state, train_epoch, train_step
from tests.conftest import batch, changed, model_card, weights_of


def test_gan_step_updates_both_networks(tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    g_before, d_before = weights_of(state.generator), weights_of(state.discriminator)
    step_stats = train_step(state, *batch(), tiny_params.train)
    assert {"loss_d", "loss_adv", "d_real", "d_fake", "loss_g"} <= step_stats.keys()
    assert changed(g_before, state.generator)
    assert changed(d_before, state.discriminator)


def test_supervised_baseline_leaves_discriminator_alone(tiny_params):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.0})
    state = build_training_state(params, 1, 3)
    g_before, d_before = weights_of(state.generator), weights_of(state.discriminator)
    step_stats = train_step(state, *batch(), params.train)
    assert "loss_d" not in step_stats
    assert changed(g_before, state.generator) and not changed(d_before, state.discriminator)


def test_training_lowers_the_loss(tiny_params):
    params = tiny_params.with_overrides({"train.lr_g": 0.01})
    state = build_training_state(params, 1, 3)
    images, masks = batch()
    first = train_step(state, images, masks, params.train)["loss_seg"]
    for _ in range(15):
        last = train_step(state, images, masks, params.train)["loss_seg"]
    assert last < 0.7 * first


def test_epoch_and_validation_on_prepared_data(tmp_path, tiny_params):
    prepare_dataset(tiny_params.data, 0, tmp_path / "prep", progress=False)
    state = build_training_state(tiny_params, 1, 3)
    train = PreparedSplit(tmp_path / "prep", "train")
    started = time.perf_counter()
    epoch_means = train_epoch(state, DataLoader(train, batch_size=4), tiny_params.train)
    assert state.global_step == math.ceil(len(train) / 4)
    assert epoch_means["images_per_s"] >= len(train) / (time.perf_counter() - started)  # timed within the call
    val = PreparedSplit(tmp_path / "prep", "val")
    confusion = confusion_over(state.generator, DataLoader(val, batch_size=8), 3)
    assert int(confusion.sum()) == len(val) * 32 * 32


def test_checkpoint_round_trip_restores_weights_and_optimisers(tmp_path, tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    train_step(state, *batch(), tiny_params.train)
    torch.save(checkpoint_of(state, 3, [{"epoch": 3}]), tmp_path / "state.pt")
    fresh = build_training_state(tiny_params.with_overrides({"seed": 99}), 1, 3)
    checkpoint = restore_checkpoint(fresh, tmp_path / "state.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["history"] == [{"epoch": 3}]
    for a, b in zip(state.generator.state_dict().values(), fresh.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.opt_g.state_dict()["state"].keys() == state.opt_g.state_dict()["state"].keys()


def test_exported_model_loads_and_predicts(tmp_path, tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    export_model(tmp_path / "model", state.generator.state_dict(), model_card(tiny_params, best_epoch=4))
    model, card = load_model(tmp_path / "model")
    assert card.best_epoch == 4 and card.num_classes == 3
    images, _ = batch()
    assert torch.equal(model(to_input(images)), state.generator.eval()(to_input(images)))


def test_shards_cover_every_index_once():
    shards = [shard_indices(11, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
