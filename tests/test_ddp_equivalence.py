"""Data parallelism changes nothing but speed: 2 workers x batch B == 1 process x batch 2B."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ganseg.checkpoints import unwrap
from ganseg.parallel import ddp_options
from ganseg.segmenter.training import build_training_state, train_step
from tests.conftest import batch, make_tiny_params

# float32 sums are taken in a different order across shards: allow rounding, nothing more.
TOLERANCE = 1e-5
# Gradients are summed over pixels in another order too: compared to the tensor's largest one.
GRADIENT_TOLERANCE = 1e-4
# Adam's first step moves a weight by lr * g / (|g| + 1e-8): where |g| is near 1e-8 the rounding of g
# shows in the weight, so weights with smaller gradients are compared by their gradients only.
ILL_CONDITIONED = 1e-6


def inputs(void: bool, semi: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """8 labelled images and, with `semi`, 8 unlabelled ones."""
    return *batch(8, seed=1, void=void), batch(8, seed=2)[0] if semi else None


def one_step(params, images, masks, unlabelled=None, wrap=lambda network: network) -> tuple[dict, dict, dict]:
    """After one training step: the state of both networks, their gradients, and the step's statistics."""
    state = build_training_state(params, 1, 3, wrap=wrap)
    step_stats = train_step(state, images, masks, params.train, unlabelled=unlabelled)
    networks = {"G.": unwrap(state.segmenter), "D.": unwrap(state.discriminator)}
    weights = {p + k: v.detach().clone() for p, net in networks.items() for k, v in net.state_dict().items()}
    grads = {p + k: v.grad.clone() for p, net in networks.items() for k, v in net.named_parameters()}
    return weights, grads, step_stats


def placed(network: torch.nn.Module) -> DistributedDataParallel:
    """Into DDP with the options the pipeline uses (no buffer broadcast for spectral-norm vectors)."""
    return DistributedDataParallel(network, **ddp_options(network))


# id: (params overrides, void pixels, unlabelled images)
CASES = {
    "group-norm": ({"model.norm": "group"}, False, False),
    "no-norm": ({"model.norm": "none"}, False, False),
    "void": ({"model.norm": "group"}, True, False),
    "class-weights": ({"train.class_weights": [0.5, 1.0, 3.0]}, True, False),
    # hinge: an untrained discriminator's scores near 0 read as realness 0.5, so some pixels are trusted
    "semi-supervised": ({"train.semi.threshold": 0.55, "train.semi.lambda_semi": 1.0, "train.adv_loss": "hinge"},
                        False, True),
}


def case_params(case: str):
    overrides, _, _ = CASES[case]
    return make_tiny_params().with_overrides({"train.batch_size": 4, "train.lambda_adv": 0.1} | overrides)


def ddp_worker(rank: int, world: int, rendezvous: str, out: dict) -> None:
    """Every case's step on this rank's half of the batch, in one process group; rank 0 hands back
    the weights and gradients per case."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        for case, (_, void, semi) in CASES.items():
            images, masks, unlabelled = inputs(void, semi)
            shard = slice(rank * len(images) // world, (rank + 1) * len(images) // world)
            weights, grads, _ = one_step(case_params(case), images[shard], masks[shard],
                                         None if unlabelled is None else unlabelled[shard], placed)
            if rank == 0:
                out[case] = (weights, grads)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> dict:
    """The two-worker step of every case, from one `mp.spawn` (a file rendezvous: no port to pick)."""
    rendezvous = f"file://{tmp_path_factory.mktemp('ddp') / 'rendezvous'}"
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(ddp_worker, args=(2, rendezvous, shared), nprocs=2, join=True)
        return dict(shared)


@pytest.mark.parametrize("case", list(CASES))
def test_two_workers_match_one_process_with_double_batch(two_workers, case):
    """With void pixels too: the shards hold different numbers of valid pixels; with class weights,
    different weight sums; with unlabelled images, different numbers of trusted pixels."""
    params, (_, void, semi) = case_params(case), CASES[case]
    torch.set_num_threads(1)
    reference, reference_grads, step_stats = one_step(params, *inputs(void, semi))
    if semi:  # some pixels trusted, not all, or the self-taught loss proves nothing
        assert 0.05 < step_stats["semi_pixels"] < 0.95 and step_stats["loss_semi"] > 0
    distributed, grads = two_workers[case]
    assert distributed.keys() == reference.keys() and grads.keys() == reference_grads.keys()
    initial, _, _ = one_step(params.with_overrides({"train.lr_g": 1e-12, "train.lr_d": 1e-12}), *inputs(void, semi))
    moved = max((reference[k] - initial[k]).abs().max().item() for k in reference if reference[k].is_floating_point())
    assert moved > 1e-4, "the step should change the weights, or the comparison proves nothing"
    worst_grad = max(((grads[k] - g).abs().max() / g.abs().max()).item() for k, g in reference_grads.items())
    assert worst_grad < GRADIENT_TOLERANCE, f"largest gradient difference {worst_grad:.2e} of the largest gradient"
    well_conditioned = {k: g.abs() > ILL_CONDITIONED for k, g in reference_grads.items()}
    worst = max(((distributed[k] - reference[k]) * well_conditioned.get(k, 1)).abs().max().item() for k in reference)
    assert worst < TOLERANCE, f"largest weight difference {worst:.2e}"
