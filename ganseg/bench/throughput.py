"""Throughput of the GAN segmenter's training step: pure PyTorch, shared by every runner."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ganseg.config import Params
from ganseg.data.synthetic import generate_sample
from ganseg.segmenter.training import TrainingState, build_training_state, train_step


def synthetic_batches(params: Params, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` in-memory batches of synthetic tissue at the training size, so no I/O is timed."""
    size, batch = params.data.image_size, params.train.batch_size
    batches = []
    for b in range(count):
        pairs = [generate_sample(params.seed, b * batch + i, size) for i in range(batch)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].repeat(1, params.data.channels, 1, 1)
        masks = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        batches.append((images, masks))
    return batches


def timed_steps(
    state: TrainingState, batches, params: Params, warmup: int, steps: int, sync=lambda: None, windows: int = 3
) -> tuple[float, float]:
    """(seconds of the `warmup` untimed steps, seconds for `steps` training steps after them: the best
    of `windows` tries, so a burst of other work on the machine does not count against the runner).
    The warm-up holds whatever the first steps cost once: oneDNN's kernel choice, torch.compile."""
    start = time.perf_counter()
    for i in range(warmup):
        train_step(state, *batches[i % len(batches)], params.train)
    warmup_seconds, best = time.perf_counter() - start, float("inf")
    for _ in range(windows):
        sync()
        start = time.perf_counter()
        for i in range(steps):
            train_step(state, *batches[i % len(batches)], params.train)
        sync()
        best = min(best, time.perf_counter() - start)
    return warmup_seconds, best


def flops_per_step(params: Params) -> int:
    """Floating-point operations of one training step (forward and backward, G and D), counted by PyTorch."""
    state = build_training_state(params, params.data.channels, params.data.num_classes)
    batch = synthetic_batches(params, 1)[0]
    with FlopCounterMode(display=False) as counter:
        train_step(state, *batch, params.train)
    return counter.get_total_flops()


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 4, windows: int = 3) -> float:
    """Dense fp32 matrix-multiply GFLOP/s with `threads` threads (best window): the practical peak."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        best = float("inf")
        for _ in range(windows):
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 * repeats / best / 1e9
