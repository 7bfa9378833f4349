"""Throughput of the GAN segmenter's training step: pure PyTorch, shared by every runner (the Ray
Train runners time it through ganseg/jobs/throughput.py)."""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode

from ganseg.config import Params
from ganseg.data.datasets import WaitClock
from ganseg.data.synthetic import generate_sample
from ganseg.imagegen.training import build_state as build_imagegen_state
from ganseg.imagegen.training import train_step as imagegen_train_step
from ganseg.parallel import ddp_options
from ganseg.segmenter.training import TrainingState, build_training_state, train_step

WARMUP, BATCHES = 3, 4  # untimed steps; in-memory batches, cycled


def synthetic_batches(params: Params, count: int, batch: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` in-memory batches (of train.batch_size unless given) of synthetic tissue at the
    training size, so no I/O is timed."""
    size, batch = params.data.image_size, batch or params.train.batch_size
    batches = []
    for b in range(count):
        pairs = [generate_sample(params.seed, b * batch + i, size) for i in range(batch)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].repeat(1, params.data.channels, 1, 1)
        masks = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        batches.append((images, masks))
    return batches


@dataclass
class Timing:
    warmup_s: float  # the untimed first steps
    seconds: float  # the best window
    waiting_for_data_share: float  # of the best window, spent waiting for the next batch (when a WaitClock was given)


def segmenter_step(state: TrainingState, params: Params) -> Callable:
    """One GAN segmenter training step on a batch (images, masks)."""
    return lambda images, masks: train_step(state, images, masks, params.train)


def image_generator_step(params: Params) -> Callable:
    """One image generator training step (imagegen.*) on a batch (images, masks), with fresh networks."""
    state = build_imagegen_state(params.imagegen, params.data.num_classes, params.data.channels)
    return lambda images, masks: imagegen_train_step(state, images, masks, params.imagegen)


def timed_steps(
    step: Callable, batches: Iterator, warmup: int, steps: int, sync=lambda: None,
    windows: int = 3, waiting: WaitClock | None = None,
) -> Timing:
    """`warmup` untimed steps, then `windows` tries of `steps` training steps (`step(*batch)`) on the
    next of `batches`; the best try counts, so a burst of other work on the machine does not count
    against the runner. The warm-up holds whatever the first steps cost once: oneDNN's kernel
    choice, torch.compile. `waiting`, the clock that wraps `batches`, tells how long each try waited
    for them."""
    waiting = waiting or WaitClock()
    start = time.perf_counter()
    for _ in range(warmup):
        step(*next(batches))
    warmup_seconds, best, best_wait = time.perf_counter() - start, float("inf"), 0.0
    for _ in range(windows):
        sync()
        start, waited = time.perf_counter(), waiting.seconds
        for _ in range(steps):
            step(*next(batches))
        sync()
        seconds = time.perf_counter() - start
        if seconds < best:
            best, best_wait = seconds, waiting.seconds - waited
    return Timing(warmup_seconds, best, best_wait / best)


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


def two_processes(params: Params, steps: int, warmup: int, batches: int, ddp: bool) -> dict:
    """Images/s of 2 processes of 1 thread each on this machine, without Ray: independent (what
    the cores allow) or training one model under DDP over gloo (what DDP itself costs)."""
    context = mp.get_context("spawn")
    results = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        rendezvous = f"file://{folder}/rendezvous"  # no port to pick: gloo binds its own
        processes = [context.Process(target=_process_steps, args=(rank, rendezvous, params.model_dump(), steps, warmup,
                                                                  batches, ddp, results)) for rank in range(2)]
        for process in processes:
            process.start()
        seconds = [results.get() for _ in processes]
        for process in processes:
            process.join()
    return {"workers": 2, "images_per_s": sum(steps * params.train.batch_size / s for s in seconds)}


def _process_steps(rank: int, rendezvous: str, raw_params: dict, steps: int, warmup: int, batches: int, ddp: bool,
                   results) -> None:
    torch.set_num_threads(1)
    params = Params.model_validate(raw_params)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=2)  # independent processes use it only to start together
    wrap = (lambda network: DistributedDataParallel(network, **ddp_options(network))) if ddp else (lambda n: n)
    state = build_training_state(params, params.data.channels, params.data.num_classes, wrap=wrap)
    try:
        batches = itertools.cycle(synthetic_batches(params, batches))
        results.put(timed_steps(segmenter_step(state, params), batches, warmup, steps, dist.barrier).seconds)
    finally:
        dist.destroy_process_group()
