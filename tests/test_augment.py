import pytest
import torch

from ganseg.config import AugmentConfig
from ganseg.data.augment import augment_pair, build_augmentation
from ganseg.data.void import VOID
from tests.conftest import prepare_dataset


def pair(size=32):
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[4:12, 6:20] = 1
    mask[20:28, 20:30] = 2
    image = (mask * 60 + 40).to(torch.uint8)[None]
    return image, mask


def test_disabled_means_no_transform():
    assert build_augmentation(AugmentConfig(enabled=False), 32) is None


def test_geometry_moves_image_and_mask_together_and_keeps_class_ids():
    torch.manual_seed(0)
    cfg = AugmentConfig(enabled=True, brightness=0, contrast=0, affine_degrees=0, crop_scale=1.0)
    transform = build_augmentation(cfg, 32)
    image, mask = pair()
    changed = 0
    for _ in range(20):
        out_image, out_mask = augment_pair(transform, image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.long
        # flips and 90-degree turns are exact: the image still encodes the mask pixel for pixel
        assert torch.equal(out_image[0], (out_mask * 60 + 40).to(torch.uint8))
        changed += not torch.equal(out_mask, mask)
    assert changed > 10


def test_crops_affine_and_elastic_keep_mask_values_as_class_ids_or_void():
    torch.manual_seed(1)
    cfg = AugmentConfig(enabled=True, crop_scale=0.5, affine_degrees=15, elastic_alpha=20.0)
    transform = build_augmentation(cfg, 32)
    image, mask = pair()
    for _ in range(10):
        _, out_mask = augment_pair(transform, image, mask)
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, VOID}  # VOID where the transform reached past the border


def with_void(size=32):
    image, mask = pair(size)
    mask[:, :5] = VOID  # a void strip down the left side
    return torch.full_like(image, 200), mask  # a constant image: a 0 in the output can only be padding


def test_flips_and_turns_carry_void_pixels_with_the_mask():
    torch.manual_seed(4)
    cfg = AugmentConfig(enabled=True, crop_scale=1.0, affine_degrees=0, brightness=0, contrast=0)
    transform = build_augmentation(cfg, 32)
    image, mask = with_void()
    for _ in range(10):
        _, out_mask = augment_pair(transform, image, mask)
        # exact moves: the same number of pixels of every value, void included
        assert torch.equal(out_mask.flatten().sort().values, mask.flatten().sort().values)


@pytest.mark.parametrize("setting", [{"affine_degrees": 30.0}, {"elastic_alpha": 60.0}])
def test_affine_and_elastic_fill_the_mask_with_void_where_they_pad(setting):
    torch.manual_seed(5)
    cfg = AugmentConfig(enabled=True, flips=False, rot90=False, brightness=0, contrast=0, **setting)
    transform = build_augmentation(cfg, 32)
    image, mask = with_void()
    padded = 0
    for _ in range(10):
        out_image, out_mask = augment_pair(transform, image, mask)
        outside = out_image[0] == 0
        assert (out_mask[outside] == VOID).all()  # never background where nothing was annotated
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, VOID}  # nearest neighbour: no blended ids
        padded += int(outside.sum())
    assert padded > 0, "no transform reached past the border: the check above proved nothing"


def test_brightness_contrast_touch_the_image_only():
    torch.manual_seed(2)
    cfg = AugmentConfig(enabled=True, crop_scale=1.0, flips=False, rot90=False, affine_degrees=0, brightness=0.5, contrast=0.5)
    image, mask = pair()
    out_image, out_mask = augment_pair(build_augmentation(cfg, 32), image, mask)
    assert torch.equal(out_mask, mask) and not torch.equal(out_image, image)


def test_prepared_training_split_applies_the_transform(tmp_path, tiny_params):
    from ganseg.data.augment import pair_transform
    from ganseg.data.datasets import PreparedSplit
    
    prepare_dataset(tiny_params.data, 0, tmp_path / "prep", progress=False)
    plain = PreparedSplit(tmp_path / "prep", "train")
    cfg = AugmentConfig(enabled=True, crop_scale=1.0, affine_degrees=0, brightness=0, contrast=0)
    augmented = PreparedSplit(tmp_path / "prep", "train", pair_transform(cfg, 32))
    torch.manual_seed(3)
    differs = sum(not torch.equal(augmented[i][1], plain[i][1]) for i in range(len(plain)))
    assert differs > 0
    assert pair_transform(AugmentConfig(enabled=False), 32) is None
