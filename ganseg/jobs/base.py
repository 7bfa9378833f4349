"""What a training job is (`GanJob`) and where it runs (`Worker`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ganseg.checkpoints import GanState
from ganseg.contracts import DatasetStats

STATE_FILE = "state.pt"  # the main training state's file in every checkpoint folder


@dataclass(frozen=True)
class Servable:
    """What MLflow logs for an exported model folder: the kind of model that serves it
    (pipeline/served.py: 'segmenter' takes images, 'image_generator' takes masks), the folder, its
    card, and one example input as file bytes (an image, or a mask)."""

    kind: str
    folder: Path
    card: Path
    example: bytes


def _shuffled(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size)


@dataclass
class Worker:
    """Where a job trains: this worker's rank among `world` workers, its device, how to `place` a
    network (to the device; into DDP when there are several workers) and how to make a shuffled
    `loader` of a dataset (sharded across workers). The defaults are one process on the CPU, so that
    a job also runs without Ray."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    place: Callable[[nn.Module], nn.Module] = lambda network: network
    loader: Callable[[Dataset, int], DataLoader] = _shuffled

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def summed(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over all workers (in place)."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        """Wait for every worker (so that timings start and end together)."""
        if self.world > 1:
            dist.barrier()

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Every random draw of `epoch` on this worker (augmentation, real and instance noise, Gumbel
        draws, mask deformation; a single worker's batch order) from a stream of its own, derived
        from (seed, rank, epoch): workers draw differently, a rerun with the same seed draws the
        same, and a run resumed at an epoch draws what the uninterrupted run drew there."""
        torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, epoch]).generate_state(1)[0]))

    def set_epoch(self, loader: DataLoader, epoch: int) -> None:
        """A sharded loader's new order for `epoch` (a DistributedSampler does not reshuffle by itself)."""
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if self.world > 1 and set_epoch is not None:
            set_epoch(epoch)


@dataclass
class Picture:
    """An image to log during training, and where (an artifact path)."""

    image: Image.Image
    artifact_file: str


class WorkerJob(Protocol):
    """What every Ray Train worker runs (pipeline/ray/worker.py): `start` builds the training
    state(s) and the data, then, epoch by epoch, `train_epoch` trains (and validates) and returns
    the epoch's figures, those of all workers together, with `score` among them; `picture` is what
    to log as an image."""

    title: str  # what the console calls the trained model
    score: str  # the figure Ray keeps the best checkpoints by (higher is better)
    epochs: int
    batch_norm: bool  # whether its networks use batch norm (synchronised across GPU workers)

    def start(self, worker: Worker) -> dict[str, GanState]:
        """Build the state(s) on `worker`; returns those to checkpoint by file name, the main one
        (STATE_FILE) last."""

    def train_epoch(self, epoch: int) -> dict[str, float]: ...

    def picture(self, epoch: int) -> Picture | None: ...


class GanJob(WorkerJob, Protocol):
    """One model's training as a GAN, as the stage driver (pipeline/training.py) runs it: its
    inputs checked, `fresh_state` to check that old checkpoints fit, `export` of the best
    checkpoint as a model folder, `servable` for MLflow to log and register."""

    stage: str  # names the Ray run and the MLflow run's stage tag
    model_key: str  # the trained network's name in checkpoints
    stats: DatasetStats  # the prepared data it trains on
    train_speed_options: bool  # whether train.precision, channels_last and compile apply to it

    def check_inputs(self) -> None:
        """Before any worker starts: the folders the job reads fit its data (GansegError if not)."""

    def fresh_state(self) -> GanState: ...

    def run_key_parts(self) -> list: ...

    def export(self, folder: Path, best: dict, run_id: str | None) -> dict:
        """Write the best checkpoint's network as a model folder; returns the summary of the training."""

    def servable(self, folder: Path) -> Servable:
        """An exported folder, as MLflow logs it to serve it."""

    def note_registration(self, folder: Path, registered: dict) -> None:
        """Record the registered model name and version in the folder's card."""
