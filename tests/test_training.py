import math
import random
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.data.datasets import PreparedSplit, shard_indices, to_input
from ganseg.segmenter.export import export_model, load_model
from ganseg.segmenter.inference import confusion_over
from ganseg.segmenter.training import build_training_state, train_epoch, train_step
from tests.conftest import batch, changed, model_card, prepare_dataset, same_state, weights_of


def test_gan_step_updates_both_networks(tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    g_before, d_before = weights_of(state.segmenter), weights_of(state.discriminator)
    step_stats = train_step(state, *batch(), tiny_params.train)
    assert {"loss_d", "loss_adv", "d_real", "d_fake", "loss_g"} <= step_stats.keys()
    assert changed(g_before, state.segmenter)
    assert changed(d_before, state.discriminator)


def test_supervised_baseline_leaves_discriminator_alone(tiny_params):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.0})
    state = build_training_state(params, 1, 3)
    g_before, d_before = weights_of(state.segmenter), weights_of(state.discriminator)
    step_stats = train_step(state, *batch(), params.train)
    assert "loss_d" not in step_stats
    assert changed(g_before, state.segmenter) and not changed(d_before, state.discriminator)


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
    assert 0 < epoch_means["waiting_for_data_share"] < 1  # reading the memory-mapped tiles takes some of the time
    assert isinstance(train.images, np.memmap) and isinstance(train.masks, np.memmap)  # never loaded whole
    val = PreparedSplit(tmp_path / "prep", "val")
    confusion = confusion_over(state.segmenter, DataLoader(val, batch_size=8), 3)
    assert int(confusion.sum()) == len(val) * 32 * 32


def test_checkpoint_round_trip_restores_weights_and_optimisers(tmp_path, tiny_params):
    """Both networks, both optimisers and schedulers (after a step, so with moments and a decayed
    rate), the step count and the random state: a restored training goes on exactly."""
    params = tiny_params.with_overrides({"train.lambda_adv": 0.1})
    state = build_training_state(params, 1, 3)
    train_step(state, *batch(), params.train)
    for scheduler in (state.sched_g, state.sched_d):
        scheduler.step()
    torch.save(checkpoint_of(state, 3, [{"epoch": 3}]), tmp_path / "state.pt")
    expected_draws = (torch.rand(4), np.random.rand(4), random.random())  # what the saved random states draw next
    fresh = build_training_state(params.with_overrides({"seed": 99}), 1, 3)
    checkpoint = restore_checkpoint(fresh, tmp_path / "state.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["history"] == [{"epoch": 3}]
    assert fresh.global_step == state.global_step > 0
    for network in ("segmenter", "discriminator"):
        assert same_state(getattr(fresh, network).state_dict(), getattr(state, network).state_dict()), network
    for name, part in state.optimisation().items():
        assert same_state(getattr(fresh, name).state_dict(), part.state_dict()), name
    assert fresh.opt_g.state_dict()["state"] and fresh.opt_d.state_dict()["state"]  # Adam's moments, to compare
    assert fresh.ema is not None and int(fresh.ema.n_averaged) == int(state.ema.n_averaged) > 0
    assert same_state(fresh.ema.module.state_dict(), state.ema.module.state_dict())  # the weights exported
    draws = (torch.rand(4), np.random.rand(4), random.random())
    assert torch.equal(draws[0], expected_draws[0]) and np.array_equal(draws[1], expected_draws[1])
    assert draws[2] == expected_draws[2]


def test_the_learning_rate_decays_each_epoch_and_goes_on_decaying_after_a_restore(tmp_path, tiny_params):
    params = tiny_params.with_overrides({"train.epochs": 4, "train.lambda_adv": 0.1, "train.adv_warmup_epochs": 0})
    state = build_training_state(params, 1, 3)
    rates = [(state.opt_g.param_groups[0]["lr"], state.opt_d.param_groups[0]["lr"])]
    for epoch in (1, 2):
        train_epoch(state, [batch(seed=epoch)], params.train, epoch=epoch)
        rates.append((state.opt_g.param_groups[0]["lr"], state.opt_d.param_groups[0]["lr"]))
    assert rates[0] == (params.train.lr_g, params.train.lr_d)
    assert all(later[i] < earlier[i] for earlier, later in zip(rates, rates[1:]) for i in (0, 1)), rates
    torch.save(checkpoint_of(state, 2, []), tmp_path / "state.pt")
    fresh = build_training_state(params, 1, 3)
    restore_checkpoint(fresh, tmp_path / "state.pt")
    assert (fresh.opt_g.param_groups[0]["lr"], fresh.opt_d.param_groups[0]["lr"]) == rates[-1]
    for restored_or_not in (state, fresh):
        torch.manual_seed(3)
        train_epoch(restored_or_not, [batch(seed=3)], params.train, epoch=3)
    assert fresh.opt_g.param_groups[0]["lr"] == state.opt_g.param_groups[0]["lr"] < rates[-1][0]


def test_exported_model_loads_and_predicts(tmp_path, tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    export_model(tmp_path / "model", state.segmenter.state_dict(), model_card(tiny_params, best_epoch=4))
    model, card = load_model(tmp_path / "model")
    assert card.best_epoch == 4 and card.num_classes == 3
    images, _ = batch()
    assert torch.equal(model(to_input(images)), state.segmenter.eval()(to_input(images)))


def test_shards_cover_every_index_once():
    shards = [shard_indices(11, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def convolutions(*networks: nn.Module) -> list[nn.Conv2d]:
    return [m for network in networks for m in network.modules() if isinstance(m, nn.Conv2d)]


def is_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_dtype_every_convolution_computes_in_on_cpu(tiny_params, precision, dtype):
    params = tiny_params.with_overrides({"train.precision": precision})
    state = build_training_state(params, 1, 3)
    computed = {"G": set(), "D": set()}
    for name, network in (("G", state.segmenter), ("D", state.discriminator)):
        for conv in convolutions(network):
            conv.register_forward_hook(lambda _, __, out, name=name: computed[name].add(out.dtype))
    before = weights_of(state.segmenter, state.discriminator)
    step_stats = train_step(state, *batch(), params.train)
    assert computed == {"G": {dtype}, "D": {dtype}}
    assert all(math.isfinite(value) for value in step_stats.values()), step_stats
    assert changed(before, state.segmenter, state.discriminator)
    assert {p.dtype for p in state.segmenter.parameters()} == {torch.float32}  # the weights stay fp32


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_grad_scaler_is_on_for_fp16_only(tiny_params, precision):
    state = build_training_state(tiny_params.with_overrides({"train.precision": precision}), 1, 3)
    assert state.scaler.is_enabled() == (precision == "fp16")


def test_fp16_scales_the_loss_and_unscales_the_gradients_before_the_step(tiny_params):
    """fp16 runs on CPU too. The gradient reaching the segmenter's logits is the scaled loss's; the weights'
    gradients the optimiser steps with are the true ones (the fp32 run's, up to fp16 rounding)."""
    at_logits, at_weights, scale = {}, {}, None
    for precision in ("fp32", "fp16"):
        # the soft hinge form: its first step does not overflow fp16, so the scale stays the initial one
        params = tiny_params.with_overrides({"train.precision": precision, "train.adv_loss": "hinge",
                                             "train.adv_mask": "soft"})
        state = build_training_state(params, 1, 3)

        def keep_gradient(_, __, logits, precision=precision):
            logits.register_hook(lambda grad: at_logits.update({precision: grad.float()}))

        state.segmenter.register_forward_hook(keep_gradient)
        before = weights_of(state.segmenter)
        train_step(state, *batch(), params.train)
        assert changed(before, state.segmenter)
        at_weights[precision] = torch.cat([p.grad.flatten() for p in state.segmenter.parameters()])
        scale = state.scaler.get_scale()
    assert scale == 2.0**16  # the initial scale, kept: no overflow in this step
    assert at_logits["fp16"].norm() / at_logits["fp32"].norm() == pytest.approx(scale, rel=0.01)
    assert at_weights["fp16"].norm() / at_weights["fp32"].norm() == pytest.approx(1.0, rel=0.01)


def test_checkpoint_round_trip_restores_the_grad_scaler(tmp_path, tiny_params):
    params = tiny_params.with_overrides({"train.precision": "fp16"})
    state = build_training_state(params, 1, 3)
    train_step(state, *batch(), params.train)
    state.scaler.update(new_scale=1024.0)  # as after a few overflows
    torch.save(checkpoint_of(state, 1, []), tmp_path / "state.pt")
    fresh = build_training_state(params, 1, 3)
    restore_checkpoint(fresh, tmp_path / "state.pt")
    assert fresh.scaler.get_scale() == 1024.0
    assert fresh.scaler.state_dict() == state.scaler.state_dict()


def test_channels_last_step_runs_in_channels_last_and_matches_the_contiguous_step(tiny_params):
    """Three-channel images: with one channel, every layout of the input would pass for channels_last."""
    images, masks = batch()
    images = images.repeat(1, 3, 1, 1)
    runs = {}
    for channels_last in (False, True):
        params = tiny_params.with_overrides({"train.channels_last": channels_last})
        state = build_training_state(params, 3, 3)
        layouts = []
        state.segmenter.register_forward_pre_hook(lambda _, args: layouts.append(is_channels_last(args[0])))
        for conv in convolutions(state.segmenter, state.discriminator):
            conv.register_forward_hook(lambda conv, _, out: layouts.append(
                is_channels_last(conv.weight) and is_channels_last(out)
            ))
        runs[channels_last] = train_step(state, images, masks, params.train), layouts
    (contiguous, contiguous_layouts), (last, last_layouts) = runs[False], runs[True]
    assert not contiguous_layouts[0] and all(last_layouts)  # the images, then every convolution's weight and output
    assert last.keys() == contiguous.keys()
    for name, loss in contiguous.items():
        assert last[name] == pytest.approx(loss, rel=1e-4, abs=1e-6), name


def test_compile_compiles_both_networks_in_place_and_keeps_their_state_dict_keys(tiny_params):
    plain = build_training_state(tiny_params, 1, 3)
    compiled = build_training_state(tiny_params.with_overrides({"train.compile": True}), 1, 3)
    for network in ("segmenter", "discriminator"):
        assert getattr(getattr(compiled, network), "_compiled_call_impl", None) is not None
        assert getattr(plain, network)._compiled_call_impl is None
        assert getattr(compiled, network).state_dict().keys() == getattr(plain, network).state_dict().keys()
    assert compiled.ema.module._compiled_call_impl is None  # the moving average is a copy made before compiling



def test_a_compiled_segmenter_computes_what_the_plain_one_does(tiny_params):
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    plain = build_training_state(tiny_params, 1, 3).segmenter.eval()
    torch.manual_seed(0)
    compiled = build_training_state(tiny_params.with_overrides({"train.compile": True}), 1, 3).segmenter.eval()
    images = torch.rand(2, 1, 32, 32)
    graphs_before = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        expected, got = plain(images), compiled(images)
    assert counters["stats"]["unique_graphs"] > graphs_before  # the forward ran as a compiled graph
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)

def test_segmenter_step_leaves_the_discriminator_gradients_of_its_own_step(tiny_params):
    # D's weights are frozen in G's step: after the step D's gradients are those of its own loss alone.
    state = build_training_state(tiny_params, 1, 3)
    images, masks = batch(4)
    seen = {}
    step = state.opt_d.step

    def record_then_step(*args, **kwargs):
        seen.update({name: p.grad.clone() for name, p in state.discriminator.named_parameters()})
        return step(*args, **kwargs)

    state.opt_d.step = record_then_step
    train_step(state, images, masks, tiny_params.train)
    for name, p in state.discriminator.named_parameters():
        torch.testing.assert_close(p.grad, seen[name], rtol=0, atol=0)
