"""Data parallelism changes nothing but speed: 2 workers x batch B == 1 process x batch 2B."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ganseg.checkpoints import unwrap
from ganseg.segmenter.training import build_training_state, train_step
from tests.conftest import batch, free_port

# float32 sums are taken in a different order across shards: allow rounding, nothing more.
TOLERANCE = 1e-5


def one_step(params, images, masks, wrap=lambda network: network) -> dict:
    state = build_training_state(params, 1, 3, wrap=wrap)
    train_step(state, images, masks, params.train)
    generator, discriminator = unwrap(state.generator), unwrap(state.discriminator)
    return {"G." + k: v.detach().clone() for k, v in generator.state_dict().items()} | {
        "D." + k: v.detach().clone() for k, v in discriminator.state_dict().items()
    }


def ddp_worker(rank: int, world: int, port: int, params, void: bool, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        images, masks = batch(8, seed=1, void=void)
        shard = slice(rank * len(images) // world, (rank + 1) * len(images) // world)
        weights = one_step(params, images[shard], masks[shard], DistributedDataParallel)
        if rank == 0:
            out.update(weights)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("norm, void", [("group", False), ("none", False), ("group", True)])
def test_two_workers_match_one_process_with_double_batch(tiny_params, norm, void):
    """With void pixels too: the shards hold different numbers of valid pixels."""
    params = tiny_params.with_overrides({"model.norm": norm, "train.batch_size": 4, "train.lambda_adv": 0.1})
    torch.set_num_threads(1)
    reference = one_step(params, *batch(8, seed=1, void=void))
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(ddp_worker, args=(2, free_port(), params, void, shared), nprocs=2, join=True)
        distributed = dict(shared)
    assert distributed.keys() == reference.keys()
    initial = one_step(params.with_overrides({"train.lr_g": 1e-12, "train.lr_d": 1e-12}), *batch(8, seed=1, void=void))
    moved = max((reference[k] - initial[k]).abs().max().item() for k in reference if reference[k].is_floating_point())
    assert moved > 1e-4, "the step should change the weights, or the comparison proves nothing"
    worst = max((distributed[k] - reference[k]).abs().max().item() for k in reference)
    assert worst < TOLERANCE, f"largest weight difference {worst:.2e}"
