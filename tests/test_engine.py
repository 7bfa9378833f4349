import torch
from torch.utils.data import DataLoader

from ganseg.data.datasets import PreparedSplit
from ganseg.data.prepare import prepare_dataset
from ganseg.engine import (
    build_networks,
    build_optimizers,
    confusion_over,
    export_model,
    load_model,
    restore_training_state,
    shard_indices,
    train_epoch,
    train_step,
    training_state,
)
from tests.conftest import model_card


def make_parts(params):
    generator, discriminator = build_networks(params, 1, 3)
    return build_optimizers(generator, discriminator, params.train)


def batch(n=4, size=32):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    masks = (images[:, 0] > 170).long() + (images[:, 0] > 220).long()
    return images, masks


def test_gan_step_updates_both_networks(tiny_params):
    parts = make_parts(tiny_params)
    d_before = [p.detach().clone() for p in parts.discriminator.parameters()]
    stats = train_step(parts, *batch(), tiny_params.train)
    assert {"loss_d", "loss_adv", "d_real", "d_fake", "loss_g"} <= stats.keys()
    assert any(not torch.equal(a, b) for a, b in zip(d_before, parts.discriminator.parameters()))


def test_supervised_baseline_leaves_discriminator_alone(tiny_params):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.0})
    parts = make_parts(params)
    d_before = [p.detach().clone() for p in parts.discriminator.parameters()]
    stats = train_step(parts, *batch(), params.train)
    assert "loss_d" not in stats
    assert all(torch.equal(a, b) for a, b in zip(d_before, parts.discriminator.parameters()))


def test_training_lowers_the_loss(tiny_params):
    params = tiny_params.with_overrides({"train.lr_g": 0.01})
    parts = make_parts(params)
    images, masks = batch()
    first = train_step(parts, images, masks, params.train)["loss_seg"]
    for _ in range(15):
        last = train_step(parts, images, masks, params.train)["loss_seg"]
    assert last < 0.7 * first


def test_epoch_and_validation_on_prepared_data(tmp_path, tiny_params):
    prepare_dataset(tiny_params.data, 0, tmp_path / "prep", progress=False)
    parts = make_parts(tiny_params)
    stats = train_epoch(parts, DataLoader(PreparedSplit(tmp_path / "prep", "train"), batch_size=4), tiny_params.train)
    assert stats["images_per_s"] > 0
    val = PreparedSplit(tmp_path / "prep", "val")
    confusion = confusion_over(parts.generator, DataLoader(val, batch_size=8), 3)
    assert int(confusion.sum()) == len(val) * 32 * 32


def test_checkpoint_round_trip_restores_weights_and_optimisers(tmp_path, tiny_params):
    parts = make_parts(tiny_params)
    train_step(parts, *batch(), tiny_params.train)
    torch.save(training_state(parts, 3, [{"epoch": 3}], {"val_miou": 0.5}), tmp_path / "state.pt")
    fresh = make_parts(tiny_params.with_overrides({"seed": 99}))
    state = restore_training_state(fresh, tmp_path / "state.pt")
    assert state["epoch"] == 3 and state["history"] == [{"epoch": 3}]
    for a, b in zip(parts.generator.state_dict().values(), fresh.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.opt_g.state_dict()["state"].keys() == parts.opt_g.state_dict()["state"].keys()


def test_exported_model_loads_and_predicts(tmp_path, tiny_params):
    parts = make_parts(tiny_params)
    export_model(tmp_path / "model", parts.generator.state_dict(), model_card(tiny_params, best_epoch=4))
    model, card = load_model(tmp_path / "model")
    assert card.best_epoch == 4 and card.num_classes == 3
    images, _ = batch()
    from ganseg.data.datasets import to_input

    assert torch.equal(model(to_input(images)), parts.generator.eval()(to_input(images)))


def test_shards_cover_every_index_once():
    shards = [shard_indices(11, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
