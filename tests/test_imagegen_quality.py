"""The measures of generated images, judged by a segmenter instead of a downloaded network."""

import pytest
import torch

from ganseg.imagegen import quality
from ganseg.segmenter.networks import UNet


def _images(n, seed, size=64):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_judge_miou_is_1_when_the_judge_reads_every_mask_right():
    class Oracle(torch.nn.Module):  # reads the class off the image: 0 -> class 0, 255 -> class 1
        def forward(self, x):
            return torch.cat([-x, x], dim=1)

    masks = torch.randint(0, 2, (4, 16, 16))
    images = (masks * 255).to(torch.uint8)[:, None]
    assert quality.judge_miou(Oracle(), images, masks, 2) == pytest.approx(1.0)
    assert quality.judge_miou(Oracle(), 255 - images, masks, 2) == pytest.approx(0.0)


def test_kid_is_near_zero_for_the_same_images_and_larger_for_others():
    judge = UNet(1, 3, 8, 2)
    real, other = _images(40, 0), (_images(40, 1) // 4)  # darker, differently textured
    same, _ = quality.kid(judge, real, real.clone())
    different, _ = quality.kid(judge, real, other)
    assert different > 0 and abs(same) < different / 10  # the unbiased estimate is only near 0 for equal sets


def test_diversity_is_0_for_identical_samples_and_high_for_unrelated_ones():
    samples = _images(15, 2).reshape(5, 3, 1, 64, 64)
    assert quality.diversity(samples[:, :1].repeat(1, 3, 1, 1, 1)) == pytest.approx(0.0, abs=1e-6)
    assert quality.diversity(samples) > 0.5
    with pytest.raises(ValueError, match="at least 2"):
        quality.diversity(samples[:, :1])


@pytest.mark.parametrize("side, scales", [(32, 3), (64, 4), (512, 5)])
def test_ms_ssim_uses_the_scales_that_fit_the_image(side, scales):
    assert quality.ms_ssim_scales(side) == scales


def test_a_copied_training_image_is_at_distance_0_from_the_training_set():
    train = _images(20, 3)
    copies, new = train[[4, 7]], _images(2, 4)
    assert quality.nearest_train_distance(copies, train).tolist() == [0.0, 0.0]
    assert (quality.nearest_train_distance(new, train) > 0.2).all()
