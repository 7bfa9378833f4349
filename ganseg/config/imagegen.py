"""params.yaml's imagegen section: the mask -> image generator, its discriminator and its training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ganseg.config.base import Strict
from ganseg.config.train import AugmentConfig


class ImagegenConfig(Strict):
    generator: Literal["spade", "pix2pix"] = Field(
        "spade", description="spade: SPADE blocks with noise (one mask, many images); pix2pix: U-Net + L1, no noise"
    )
    discriminator: Literal["patch", "oasis"] = Field(
        "patch", description="patch: multi-scale PatchGAN, hinge loss, feature matching; oasis: an (N+1)-class"
        " segmenter whose extra class is 'generated', class-balanced cross-entropy",
    )
    base_channels: int = Field(16, ge=4, description="generator width at full resolution")
    depth: int = Field(3, ge=1, le=6, description="the generator starts at 1/2**depth of the image size")
    noise_dim: int = Field(16, ge=1, description="spade: length of the noise vector joined to the label map")
    disc_channels: int = Field(32, ge=4)
    disc_layers: int = Field(3, ge=1, le=5, description="patch: down-sampling layers per scale")
    disc_scales: int = Field(2, ge=1, le=4, description="patch: image scales judged (full, 1/2, ...)")
    spectral_norm: bool = True
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(8, ge=1, description="per worker")
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(8e-4, gt=0)
    lambda_fm: float = Field(10.0, ge=0, description="patch: weight of feature matching")
    lambda_l1: float = Field(100.0, ge=0, description="pix2pix: weight of the L1 distance to the real image")
    ema_decay: float = Field(
        0.99, ge=0, lt=1,
        description="moving average of the generator's weights (warmed up: min(decay, (1 + n) / (10 + n))"
        " after n updates); 0 = off",
    )
    augment: AugmentConfig = Field(
        default_factory=lambda: AugmentConfig(brightness=0.0, contrast=0.0),
        description="joint mask/image augmentation of training tiles; geometric only by default, so that the"
        " generator learns the images' own intensities",
    )
    samples: int = Field(3, ge=1, le=8, description="images drawn per mask in the logged grids")
