"""The throughput bench's job: the segmenter's training step timed on every Ray Train worker."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch

from ganseg.bench.throughput import BATCHES, WARMUP, segmenter_step, synthetic_batches, timed_steps
from ganseg.config import Params
from ganseg.data.datasets import Endless, WaitClock, training_batches
from ganseg.jobs.base import Worker
from ganseg.segmenter.training import build_training_state


class ThroughputJob:
    """One epoch of `steps` timed training steps (best of 3 windows, after WARMUP untimed ones) on
    in-memory batches, or on this worker's shard of the prepared tiles in `data_dir`, read as the
    train stage reads them. Its figures: the window's seconds, when the worker started, and the
    workers' mean share of the window spent waiting for batches."""

    title = "throughput"
    score = "seconds"
    batch_norm = False
    epochs = 1

    def __init__(self, params: Params, data_dir: Path | None, options: dict):
        """options: steps, the steps of each timed window."""
        self.params, self.data_dir, self.steps = params, data_dir, int(options["steps"])
        self.started = time.time()

    def start(self, worker: Worker) -> dict:
        self.worker = worker
        self.state = build_training_state(self.params, self.params.data.channels, self.params.data.num_classes,
                                          wrap=worker.place)
        return {}  # nothing to resume: each run times afresh

    def train_epoch(self, epoch: int) -> dict[str, float]:
        params, waiting = self.params, WaitClock()
        if self.data_dir:
            loader, _ = training_batches(self.data_dir, params, params.data.image_size,
                                         lambda dataset: self.worker.loader(dataset, params.train.batch_size))
            batches = waiting.wrap(Endless(loader))
        else:
            batches = itertools.cycle(synthetic_batches(params, BATCHES))
        timing = timed_steps(segmenter_step(self.state, params), batches, WARMUP, self.steps, self.worker.barrier,
                             waiting=waiting)
        wait_share = self.worker.summed(torch.tensor([timing.waiting_for_data_share]))
        return {"seconds": timing.seconds, "worker_started": self.started,
                "waiting_for_data_share": wait_share.item() / self.worker.world}

    def picture(self, epoch: int) -> None:
        return None
