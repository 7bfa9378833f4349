"""The moving average of a GAN's trained network, which is validated and exported instead of it."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganseg.checkpoints import unwrap


def moving_average(network: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of `network`'s weights and buffers; None when `decay` is 0."""
    if decay <= 0:
        return None
    return AveragedModel(unwrap(network), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
