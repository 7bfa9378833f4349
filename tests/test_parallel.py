"""The helpers that keep DDP from doing needless work: frozen() and ddp_options()."""

import torch
from torch import nn

from ganseg.config import Params
from ganseg.parallel import ddp_options, frozen
from ganseg.segmenter.networks import build_discriminator, build_segmenter


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the network is its .module."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_frozen_passes_gradients_to_the_input_but_none_to_the_weights():
    network = nn.Conv2d(2, 1, 3)
    x = torch.rand(1, 2, 8, 8, requires_grad=True)
    with frozen(Wrapper(network)) as bare:
        assert bare is network  # outside the wrapper: DDP's hooks see no backward
        loss = bare(x).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in network.parameters())
    assert all(p.requires_grad for p in network.parameters())  # restored on the way out


def test_frozen_restores_trainability_after_an_error_and_leaves_frozen_weights_frozen():
    network = nn.Linear(2, 2)
    network.bias.requires_grad_(False)
    try:
        with frozen(network):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert network.weight.requires_grad and not network.bias.requires_grad


def test_only_batch_statistics_are_broadcast():
    params = Params.model_validate({})
    assert ddp_options(build_discriminator(params.model, 1, 3)) == {"forward_sync_buffers": False}  # spectral norm
    batch_norm = Params.model_validate({"model": {"norm": "batch"}}).model
    assert ddp_options(build_segmenter(batch_norm, 1, 3)) == {"forward_sync_buffers": True}
    assert ddp_options(build_segmenter(params.model, 1, 3)) == {"forward_sync_buffers": False}  # group norm
