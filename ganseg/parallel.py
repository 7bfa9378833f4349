"""Helpers for networks that may sit inside a DistributedDataParallel wrapper."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ganseg.checkpoints import unwrap


@contextmanager
def frozen(network: nn.Module) -> Iterator[nn.Module]:
    """The bare network (outside its DDP wrapper) with its weights out of autograd, for the trained
    network's adversarial term: the loss flows through it to the masks, but computes no gradient for its weights
    (the discriminator's next step clears them anyway) and, under DDP, all-reduces none."""
    bare = unwrap(network)
    weights = [p for p in bare.parameters() if p.requires_grad]
    for weight in weights:
        weight.requires_grad_(False)
    try:
        yield bare
    finally:
        for weight in weights:
            weight.requires_grad_(True)


def ddp_options(network: nn.Module) -> dict:
    """DistributedDataParallel's keyword arguments for `network`: buffers are synchronised from rank 0
    at every forward only where they are batch statistics (at the start they always are). A spectral norm's power-iteration vectors
    are computed from the weights, which DDP keeps equal, so they agree on every worker without a
    broadcast that would add a wait for the other workers to every forward."""
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())
    return {"forward_sync_buffers": batch_norm}
