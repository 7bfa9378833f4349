"""A benchmark run's training state after each epoch, so that a run stopped in its middle (a closed
laptop, a killed job, hours into a long benchmark) goes on from its last finished epoch and ends with
the weights it would have had if never stopped.

The file is a training checkpoint (ganseg/checkpoints.py: networks, optimisers, schedulers, moving
average, RNG states) plus what makes it this run's (its params and step budget), where each seeded
loader stood (ganseg/data/datasets.py's `Endless`), and the seconds its epochs took. A resumed run
puts each loader back there, then the random states: the next batch, its augmentation and every
later random draw are the ones the uninterrupted run would have had.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ganseg.checkpoints import checkpoint_of, read_checkpoint, restore_checkpoint
from ganseg.config import Params
from ganseg.data.datasets import Endless


class RunClock:
    """Wall and CPU seconds since a run started, with those of its earlier sittings."""

    def __init__(self):
        self.earlier_s = self.earlier_cpu_s = 0.0
        self._started = (time.perf_counter(), time.process_time())

    def seconds(self) -> tuple[float, float]:
        wall, cpu = self._started
        return (self.earlier_s + time.perf_counter() - wall, self.earlier_cpu_s + time.process_time() - cpu)


class EpochSaves:
    """One run's state file at `path`: saved after every epoch, read back by `restore` when `resume`."""

    def __init__(self, path: Path, params: Params, steps: int, resume: bool):
        self.path, self.resume = path, resume
        self.identity = {"params": params.model_dump(mode="json"), "steps": steps}
        self.resumed_after = 0  # epochs done when the run was taken up again
        self.clock = RunClock()

    def restore(self, state, batches: Endless, unlabelled: Endless | None) -> int:
        """The number of epochs this run had finished, their state put into `state` and the RNGs and
        the loaders moved on past the batches they gave; 0, changing nothing, when there is no saved
        state of this run (another params or budget, or `resume` off)."""
        if not (self.resume and self.path.exists()):
            return 0
        saved = read_checkpoint(self.path, state.model_key)
        if any(saved.get(key) != value for key, value in self.identity.items()):
            return 0
        batches.go_to(saved["batches"])
        if unlabelled is not None:
            unlabelled.go_to(saved["unlabelled"])
        restore_checkpoint(state, self.path, saved)  # after going there, which drew augmentations
        self.clock.earlier_s, self.clock.earlier_cpu_s = saved["train_s"], saved["train_cpu_s"]
        self.resumed_after = saved["epoch"]
        return saved["epoch"]

    def save(self, state, epoch: int, batches: Endless, unlabelled: Endless | None) -> None:
        train_s, train_cpu_s = self.clock.seconds()
        payload = checkpoint_of(state, epoch, history=[]) | self.identity | {
            "batches": batches.position(), "unlabelled": unlabelled.position() if unlabelled is not None else None,
            "train_s": train_s, "train_cpu_s": train_cpu_s}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.part")
        torch.save(payload, partial)
        os.replace(partial, self.path)  # a run stopped while saving keeps its previous epoch

    def discard(self) -> None:
        """Remove the file of a finished run, and its folder when that is left empty."""
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()
