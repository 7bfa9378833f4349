import pytest

from ganseg.bench.throughput import flops_per_step, matmul_gflops, synthetic_batches, timed_steps
from ganseg.segmenter.training import build_training_state


def test_flop_count_grows_with_batch_and_matches_a_hand_estimate(tiny_params):
    small = flops_per_step(tiny_params.with_overrides({"train.batch_size": 2}))
    double = flops_per_step(tiny_params.with_overrides({"train.batch_size": 4}))
    assert double == pytest.approx(2 * small, rel=0.01)
    # First U-Net conv alone, forward: 32*32 pixels * 8 out * 9 taps * 1 in * 2 FLOP per MAC, per image.
    assert small > 2 * 32 * 32 * 8 * 9 * 2


def test_timed_steps_and_peak_are_positive(tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    seconds = timed_steps(state, synthetic_batches(tiny_params, 2), tiny_params, warmup=1, steps=2, windows=2)
    assert seconds > 0
    assert matmul_gflops(1, size=256, repeats=2, windows=1) > 0.1
