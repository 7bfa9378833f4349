"""The moving average of a GAN's trained network, which is validated and exported instead of it."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ganseg.checkpoints import unwrap

WARMUP_UPDATES = 10


def moving_average(network: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `network`'s weights and buffers; None when `decay` is 0."""
    if decay <= 0:
        return None
    return AveragedModel(unwrap(network), multi_avg_fn=warmed_up_average(decay), use_buffers=True)


def decay_after(updates: int, decay: float) -> float:
    """The decay of the next update: (1 + n) / (10 + n) after n updates, capped at `decay`.

    A plain average with decay 0.99 would still hold a third of the random initial weights after 100
    updates, about three epochs of the default data; warmed up, the average follows the early
    network and reaches the full decay only once the network changes slowly.
    """
    return min(decay, (1 + updates) / (WARMUP_UPDATES + updates))


def warmed_up_average(decay: float):
    """AveragedModel's update: each averaged tensor moves towards the network's by 1 - decay_after(n)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        weight = 1 - decay_after(int(updates), decay)
        for mean, value in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(value, weight)
            else:
                mean.copy_(value)

    return update
