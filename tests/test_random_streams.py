"""Each training worker draws from a random stream of its own, derived from the seed, its rank and
the epoch; the image generator's networks start from the seed."""

import torch

from ganseg.contracts import write_dataset_stats
from ganseg.data.augment import pair_transform
from ganseg.jobs.base import Worker
from ganseg.jobs.imagegen import ImagegenJob
from tests.conftest import prepared_stats


def augmented(tiny_params, rank: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """What worker `rank` makes of one tile and its mask four times over in `epoch` (flips,
    rotations, brightness and contrast: the default augmentation)."""
    Worker(rank=rank, world=2).seed_epoch(seed, epoch)
    augment = pair_transform(tiny_params.train.augment, 32)
    image = torch.arange(32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(1, 32, 32)
    mask = torch.arange(32 * 32).remainder(3).view(32, 32)
    return [torch.cat([a.flatten().float(), b.flatten().float()]) for a, b in (augment(image, mask) for _ in range(4))]


def test_two_workers_augment_differently_and_a_rerun_repeats_exactly(tiny_params):
    rank_0, rank_1 = augmented(tiny_params, 0, seed=3, epoch=1), augmented(tiny_params, 1, seed=3, epoch=1)
    assert any(not torch.equal(a, b) for a, b in zip(rank_0, rank_1))
    again = augmented(tiny_params, 0, seed=3, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(rank_0, again))


def test_each_epoch_and_each_seed_draw_a_stream_of_their_own(tiny_params):
    first = augmented(tiny_params, 0, seed=3, epoch=1)
    assert any(not torch.equal(a, b) for a, b in zip(first, augmented(tiny_params, 0, seed=3, epoch=2)))
    assert any(not torch.equal(a, b) for a, b in zip(first, augmented(tiny_params, 0, seed=4, epoch=1)))


def test_the_image_generator_starts_from_the_same_weights_for_the_same_seed(tiny_params, tmp_path):
    write_dataset_stats(tmp_path, prepared_stats())
    job = ImagegenJob(tiny_params, tmp_path, {"judge": str(tmp_path / "judge")})
    first = job.fresh_state().generator.state_dict()
    torch.rand(100)  # whatever was drawn in between
    second = job.fresh_state().generator.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = ImagegenJob(tiny_params.with_overrides({"seed": tiny_params.seed + 1}), tmp_path,
                        {"judge": str(tmp_path / "judge")}).fresh_state().generator.state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first)
