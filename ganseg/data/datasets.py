"""Reading a prepared folder for training and evaluation: the tile splits, the whole-size test
images, the labelled / unlabelled share of the training tiles and the loaders built from them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from ganseg.config import Params
from ganseg.contracts import FULL_TEST_DIR, read_dataset_stats
from ganseg.data.void import VOID
from ganseg.errors import DataError

T = TypeVar("T")


def full_size_test(data_dir: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image (H, W, C) uint8, mask (H, W) uint8) of every test image at its own size."""
    folder = Path(data_dir) / FULL_TEST_DIR
    if not folder.is_dir():
        raise DataError(f"{data_dir} has no {FULL_TEST_DIR}/ (prepared by an older ganseg): run `ganseg prepare` again")
    for image_path in sorted((folder / "images").glob("*.png")):
        image = np.array(Image.open(image_path))
        yield (image[..., None] if image.ndim == 2 else image), np.array(Image.open(folder / "masks" / image_path.name))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the generator's input range."""
    return images.float().div(127.5).sub(1.0)


class PreparedSplit(Dataset):
    """One split of a prepared folder, memory-mapped; yields (uint8 image, int64 mask).

    `transform(image, mask) -> (image, mask)` is applied to every item (training augmentation).
    """

    def __init__(self, data_dir: str | Path, split: str, transform=None):
        data_dir = Path(data_dir)
        read_dataset_stats(data_dir)
        self.images = np.load(data_dir / f"{split}_images.npy", mmap_mode="r")
        self.masks = np.load(data_dir / f"{split}_masks.npy", mmap_mode="r")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[index]))
        mask = torch.from_numpy(np.array(self.masks[index])).long()
        return self.transform(image, mask) if self.transform else (image, mask)


def labelled_split(data_dir: str | Path, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training-tile indices (labelled, unlabelled): whole source images, a seeded `fraction` of them
    (at least one) keep their masks; the tiles of the rest are used as images only."""
    manifest = pd.read_csv(Path(data_dir) / "manifest.csv")
    train = manifest[manifest["split"] == "train"]
    stems = sorted(train["stem"].astype(str).unique())
    if fraction >= 1:
        return train["index"].tolist(), []
    order = np.random.default_rng(seed).permutation(len(stems))
    kept = {stems[i] for i in order[: max(1, round(fraction * len(stems)))]}
    is_labelled = train["stem"].astype(str).isin(kept)
    return train.loc[is_labelled, "index"].tolist(), train.loc[~is_labelled, "index"].tolist()


def labelled_frequency(data_dir: str | Path, params: Params) -> list[float]:
    """Each class's share of the annotated pixels of the labelled training tiles (train.semi.label_fraction),
    void left out: what inverse_sqrt class weights come from, so the unlabelled images' masks never leak in."""
    stats = read_dataset_stats(data_dir)
    labelled, unlabelled = labelled_split(data_dir, params.train.semi.label_fraction, params.seed)
    if not unlabelled:
        return stats.train_frequency
    masks = np.load(Path(data_dir) / "train_masks.npy", mmap_mode="r")
    counts = sum((np.bincount(masks[i].ravel(), minlength=VOID + 1) for i in labelled), np.zeros(VOID + 1, np.int64))
    counts = counts[: stats.num_classes]  # void (VOID) left out
    return (counts / max(counts.sum(), 1)).tolist()


class ImagesOnly(Dataset):
    """The images of a dataset of (image, mask) pairs, masks dropped (the semi-supervised unlabelled set)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[index][0]


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Every index exactly once across ranks (unlike DistributedSampler, which pads)."""
    return list(range(rank, length, world_size))


class WaitClock:
    """The seconds spent waiting for the next item of the iterables it wraps: how long training
    waits for its input (reading, decoding, augmenting) rather than computing."""

    def __init__(self):
        self.seconds = 0.0

    def wrap(self, iterable: Iterable[T]) -> Iterator[T]:
        items = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield item


class Endless(Iterator):
    """Batches of `loader`, pass after pass, each pass in a new order.

    A loader that shuffles with its own sampler reshuffles every pass by itself; a DistributedSampler
    (Ray Train with more than one worker) is told the pass number with set_epoch before each pass.

    Where it stands (`position`: the pass, the state of the loader's random generator when that
    pass began, and how many of its batches were taken) can be saved, and an Endless of the same
    loader `go_to` it later: a seeded loader then gives the batches it would have given next. Going
    there draws the pass's batches taken so far once more (at most one pass of loading).
    """

    def __init__(self, loader):
        self.loader, self.passes, self.taken = loader, 0, 0
        self._batches: Iterator = iter(())
        self._generator_at_pass_start = None

    def __next__(self):
        try:
            batch = next(self._batches)
        except StopIteration:
            self._begin_pass()
            batch = next(self._batches)
        self.taken += 1
        return batch

    def _begin_pass(self) -> None:
        set_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.passes)
        generator = getattr(self.loader, "generator", None)
        self._generator_at_pass_start = generator.get_state() if generator is not None else None
        self._batches = iter(self.loader)
        self.passes, self.taken = self.passes + 1, 0

    def position(self) -> dict:
        return {"passes": self.passes, "taken": self.taken, "generator": self._generator_at_pass_start}

    def go_to(self, position: dict) -> None:
        if position["passes"] == 0:
            return
        self.passes = position["passes"] - 1
        if position["generator"] is not None:
            self.loader.generator.set_state(position["generator"])
        self._begin_pass()
        for _ in range(position["taken"]):
            next(self)


def training_batches(
    data_dir: str | Path, params: Params, image_size: int, loader: Callable[[Dataset], DataLoader]
) -> tuple[DataLoader, Iterator[torch.Tensor] | None]:
    """The loader of the labelled training tiles (augmented), and endless batches of the unlabelled
    ones (images only), or None when there are none or no discriminator to use them (lambda_adv 0).

    `loader` makes a shuffled DataLoader of a dataset: a seeded one in a plain loop, one prepared by
    Ray under Ray Train.
    """
    from ganseg.data.augment import pair_transform  # torchvision: 2 s to import, for the workers only

    train_set = PreparedSplit(data_dir, "train", pair_transform(params.train.augment, image_size))
    labelled, unlabelled = labelled_split(data_dir, params.train.semi.label_fraction, params.seed)
    labelled_loader = loader(Subset(train_set, labelled))
    if not (unlabelled and params.train.lambda_adv > 0):
        return labelled_loader, None
    return labelled_loader, Endless(loader(ImagesOnly(Subset(train_set, unlabelled))))
