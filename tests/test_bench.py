import itertools
import time

import pytest
import torch

from ganseg.bench.throughput import (
    flops_per_step,
    matmul_gflops,
    segmenter_step,
    synthetic_batches,
    timed_steps,
)
from ganseg.data.datasets import WaitClock
from ganseg.segmenter.training import build_training_state
from tests.conftest import ROOT


def conv_macs(layers: list[tuple[int, int, int, int]]) -> int:
    """Multiply-adds of convolutions given as (output pixels, in channels, out channels, kernel taps)."""
    return sum(pixels * c_in * c_out * taps for pixels, c_in, c_out, taps in layers)


def test_flop_count_matches_a_hand_count_of_the_convolutions(tiny_params):
    params = tiny_params.with_overrides({
        "data.image_size": 16, "train.batch_size": 2,
        "model.base_channels": 4, "model.depth": 1, "model.disc_channels": 4, "model.disc_layers": 1,
    })
    # U-Net, 1 -> 3 classes, widths 4 and 8: two 3x3 blocks down (16x16, then 8x8 after pooling),
    # a 1x1 up-projection, a 3x3 block on the concatenated skip, a 1x1 head.
    generator = [(256, 1, 4, 9), (256, 4, 4, 9), (64, 4, 8, 9), (64, 8, 8, 9),
                 (256, 8, 4, 1), (256, 8, 4, 9), (256, 4, 4, 9), (256, 4, 3, 1)]
    # PatchGAN on image + 3 class maps: a 4x4 stride-2 conv to 8x8, then a 3x3 conv to one score map.
    discriminator = [(64, 4, 4, 16), (64, 4, 1, 9)]
    g, d = conv_macs(generator), conv_macs(discriminator)
    g_first, d_first = conv_macs(generator[:1]), conv_macs(discriminator[:1])
    # Backward costs two forwards (input and weight gradients), except no input gradient where the
    # input needs none: the images into G, and the detached prediction into D in D's own step. In G's
    # step D's weights are frozen: a forward and the input gradients only.
    n = 2
    macs = n * (3 * g - g_first) + 2 * n * (3 * d - d_first) + n * 2 * d  # G; D on real + fake; D in G's step
    assert flops_per_step(params) == pytest.approx(2 * macs, rel=0.02)


def test_flop_count_doubles_with_the_batch(tiny_params):
    small = flops_per_step(tiny_params.with_overrides({"train.batch_size": 2}))
    double = flops_per_step(tiny_params.with_overrides({"train.batch_size": 4}))
    assert double == pytest.approx(2 * small, rel=0.01)


def test_timed_steps_runs_every_step_and_reports_the_best_window(tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    started = time.perf_counter()
    timing = timed_steps(segmenter_step(state, tiny_params), itertools.cycle(synthetic_batches(tiny_params, 2)),
                         warmup=1, steps=2, windows=3)
    elapsed = time.perf_counter() - started
    assert state.global_step == 1 + 3 * 2
    assert 0 < timing.seconds <= (elapsed - timing.warmup_s) / 3  # the best of three windows takes at most their mean
    assert 0 < timing.warmup_s < elapsed - 3 * timing.seconds + 1e-9


def test_timed_steps_counts_the_time_spent_waiting_for_batches(tiny_params):
    state = build_training_state(tiny_params, 1, 3)
    pause = 0.05

    def slow_batches():
        for batch in itertools.cycle(synthetic_batches(tiny_params, 2)):
            time.sleep(pause)
            yield batch

    waiting = WaitClock()
    timing = timed_steps(segmenter_step(state, tiny_params), waiting.wrap(slow_batches()), warmup=1, steps=3,
                         windows=2, waiting=waiting)
    assert 3 * pause / timing.seconds <= timing.waiting_for_data_share < 1
    in_memory = timed_steps(segmenter_step(state, tiny_params), itertools.cycle(synthetic_batches(tiny_params, 2)),
                            warmup=1, steps=3)
    assert in_memory.waiting_for_data_share == 0.0  # no clock, nothing counted


def test_matmul_rate_is_its_flops_over_the_best_window_and_restores_the_threads():
    threads = torch.get_num_threads()
    started = time.perf_counter()
    gflops = matmul_gflops(1, size=256, repeats=2, windows=2)
    overall = 2 * 256**3 * 2 * 2 / (time.perf_counter() - started) / 1e9  # every timed product over the whole call
    assert overall <= gflops < 1000  # the best window beats the average; no single thread reaches a TFLOP/s
    assert torch.get_num_threads() == threads


def test_plain_loop_variants_turn_on_what_they_name(tiny_params):
    from pipeline.stages.bench import PLAIN_VARIANTS

    states = {name: build_training_state(tiny_params.with_overrides(o), 1, 3) for name, o in PLAIN_VARIANTS.items()}
    assert states["bf16"].precision == "bf16" and states["fp32"].precision == "fp32"
    assert states["channels_last"].channels_last and not states["fp32"].channels_last
    assert states["torch.compile"].segmenter._compiled_call_impl is not None


def test_runners_are_compared_within_each_round_and_the_median_reported():
    from pipeline.stages.bench import _median_ratio, _median_row

    rounds = [{"a": {"images_per_s": 10.0}, "b": {"images_per_s": 20.0}},
              {"a": {"images_per_s": 5.0}, "b": {"images_per_s": 9.0}},
              {"a": {"images_per_s": 8.0}, "b": {"images_per_s": 17.6}}]
    assert _median_ratio(rounds, "b", "a") == pytest.approx(2.0)  # ratios 2.0, 1.8, 2.2
    assert _median_row([r["a"] for r in rounds]) == {"images_per_s": 8.0}


@pytest.mark.parametrize("ddp", [False, True])
def test_two_processes_without_ray_report_their_summed_rate(tiny_params, ddp):
    from ganseg.bench.throughput import two_processes

    row = two_processes(tiny_params, steps=2, warmup=1, batches=1, ddp=ddp)
    assert row["workers"] == 2 and 0 < row["images_per_s"] < 1e5


def test_throughput_table_shows_the_data_wait_of_the_runner_that_reads_prepared_data():
    from ganseg.bench.tables import throughput_table

    runner = {"workers": 2, "images_per_s": 100.0, "gflops": 1.0, "fraction_of_peak": 0.1, "startup_s": 3.0}
    report = {
        "runners": {"Ray Train, 2 workers": runner, "reading": runner | {"waiting_for_data_share": 0.042}},
        "matmul_peak_gflops": {"1 thread": 10.0}, "rounds": [{}, {}], "ray_1_worker_vs_plain": 0.95,
        "ray_2_workers_vs_1": 1.5, "reading_vs_in_memory": 0.97, "independent_vs_plain": 1.6, "ddp_vs_plain": 1.5,
        "gflop_per_step": 1.0, "plain_variants": {}, "machine": "a machine",
        "image_generator": {"images_per_s": 12.5, "batch": 8},
    }
    table = throughput_table(report)
    assert "| reading | 100.0 | 1.00 | 10% | 3.0 | 4.2% of step time |" in table
    assert "| Ray Train, 2 workers | 100.0 | 1.00 | 10% | 3.0 | - |" in table
    assert "reading the prepared data / on in-memory batches: 0.97x" in table
    assert "The image generator's step (imagegen.*, fp32, batch 8, plain loop of one thread): 12.5 images/s" in table


@pytest.mark.integration
def test_bench_throughput_times_every_runner_once_end_to_end(tmp_path):
    """The whole command at its smallest: one round of two steps, fp32 only, tiny networks."""
    import json

    from tests.e2e import TINY, clean_env, run

    tiny = {key: value for key, value in TINY.items() if key.startswith(("data.", "model."))}
    settings = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={value}")]
    done = run(["ganseg", "bench", "throughput", "--params", str(ROOT / "params.yaml"), "--steps", "2", "--rounds", "1",
                "--variants", "fp32", "--out", str(tmp_path / "figures.json"), "--set", "data.source=synthetic",
                "--set", "imagegen.base_channels=4",
                *settings], tmp_path, clean_env())
    report = json.loads((tmp_path / "figures.json").read_text())
    assert set(report["runners"]) == {"plain loop", "2 processes, independent (no Ray)",
                                      "2 processes, DDP over gloo (no Ray)", "Ray Train, 1 worker",
                                      "Ray Train, 2 workers", "Ray Train, 2 workers, reading data.source prepared"}
    assert all(row["images_per_s"] > 0 for row in report["runners"].values())
    assert set(report["plain_variants"]) == {"fp32"} and report["image_generator"]["images_per_s"] > 0
    assert "The image generator's step" in done.stdout and "| Ray Train, 2 workers |" in done.stdout
    assert "Token authentication" not in done.stderr and "Ray: 2 CPUs, 0 GPUs, token auth" in done.stdout
