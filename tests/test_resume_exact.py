"""A training resumed from its checkpoint ends where the uninterrupted training ends: each epoch
draws from its own random stream (Worker.seed_epoch), and the checkpoint holds the rest."""

import torch

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.jobs.base import Worker
from ganseg.jobs.segmenter import SegmenterJob
from tests.conftest import prepare_dataset


def trained(params, data_dir, epochs: range, checkpoint=None, save_to=None) -> dict:
    """The weights of the segmenter, its moving average (what is exported) and the discriminator
    after `epochs` of the job's loop in this process (as each Ray worker runs it: seed the epoch,
    train it), started from `checkpoint` when given."""
    job = SegmenterJob(params, data_dir)
    (state,) = job.start(Worker()).values()
    if checkpoint:
        restore_checkpoint(state, checkpoint)
    worker = Worker()
    for epoch in epochs:
        worker.seed_epoch(params.seed, epoch)
        job.train_epoch(epoch)
    if save_to:
        torch.save(checkpoint_of(state, epochs[-1], []), save_to)
    networks = {"segmenter": state.segmenter, "ema": state.ema.module, "discriminator": state.discriminator}
    return {f"{name}.{key}": value.clone() for name, network in networks.items()
            for key, value in network.state_dict().items()}


def test_a_run_resumed_at_epoch_2_ends_with_the_weights_of_the_uninterrupted_run(tiny_params, tmp_path):
    params = tiny_params.with_overrides({"train.lambda_adv": 0.1, "train.epochs": 3})
    prepare_dataset(params.data, params.seed, tmp_path / "prepared", progress=False)
    whole = trained(params, tmp_path / "prepared", range(1, 4))
    trained(params, tmp_path / "prepared", range(1, 3), save_to=tmp_path / "state.pt")
    resumed = trained(params, tmp_path / "prepared", range(3, 4), checkpoint=tmp_path / "state.pt")
    assert whole.keys() == resumed.keys()
    assert {key.split(".")[0] for key in whole} == {"segmenter", "ema", "discriminator"}
    # exactly: the same draws, the same kernels, in one process
    assert all(torch.equal(whole[key], resumed[key]) for key in whole), [
        key for key in whole if not torch.equal(whole[key], resumed[key])]
