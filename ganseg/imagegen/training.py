"""The image generator's training: its state, one step and one epoch; pure PyTorch, no Ray.

One step updates the discriminator on real images against generated ones (drawn from the same
masks with fresh noise), then the generator: with the PatchGAN discriminator, hinge + lambda_fm *
feature matching (+ lambda_l1 * L1 to the real image for pix2pix); with the OASIS discriminator,
its class-balanced cross-entropy, the generator asking for its pixels to be read as the classes of
the mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ganseg.checkpoints import unwrap
from ganseg.config import ImagegenConfig
from ganseg.data.datasets import to_input
from ganseg.errors import require_finite
from ganseg.gan.averaging import moving_average
from ganseg.imagegen import losses
from ganseg.imagegen.networks import (
    MultiScalePatchDiscriminator,
    OasisDiscriminator,
    Pix2PixGenerator,
    SpadeGenerator,
    one_hot_with_void,
)
from ganseg.parallel import frozen

ADVICE = "lower imagegen.lr_g or imagegen.lr_d"


@dataclass
class JointTerm:
    """An extra term of the generator's loss: `loss` of the images it draws from `masks` (in [-1, 1])."""

    masks: torch.Tensor
    loss: Callable[[torch.Tensor], torch.Tensor]
    images: torch.Tensor | None = None


@dataclass
class ImagegenState:
    """Both networks, their optimisers, the step count and the generator's moving average (a `GanState`)."""

    model_key: ClassVar[str] = "generator"
    generator: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    num_classes: int
    global_step: int = 0
    ema: AveragedModel | None = None

    @property
    def model(self) -> nn.Module:
        return self.generator

    def optimisation(self) -> dict:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    @property
    def eval_generator(self) -> nn.Module:
        """The generator to sample and export: the moving average when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.generator)


def build_generator(cfg: ImagegenConfig, num_classes: int, channels: int) -> nn.Module:
    if cfg.generator == "pix2pix":
        return Pix2PixGenerator(num_classes, channels, cfg.base_channels, cfg.depth)
    return SpadeGenerator(num_classes, channels, cfg.base_channels, cfg.depth, cfg.noise_dim, cfg.spectral_norm)


def build_discriminator(cfg: ImagegenConfig, num_classes: int, channels: int) -> nn.Module:
    if cfg.discriminator == "oasis":
        return OasisDiscriminator(channels, num_classes, cfg.disc_channels, cfg.depth)
    return MultiScalePatchDiscriminator(channels, num_classes, cfg.disc_channels, cfg.disc_layers, cfg.disc_scales,
                                       cfg.spectral_norm)


def build_state(
    cfg: ImagegenConfig, num_classes: int, channels: int, place: Callable[[nn.Module], nn.Module] = lambda m: m
) -> ImagegenState:
    """Both networks (each passed through `place`: device, DDP), Adam with β1 = 0 as in SPADE and
    OASIS, and the generator's moving average."""
    generator = place(build_generator(cfg, num_classes, channels))
    discriminator = place(build_discriminator(cfg, num_classes, channels))
    return ImagegenState(
        generator=generator,
        discriminator=discriminator,
        opt_g=torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=(0.0, 0.999)),
        opt_d=torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=(0.0, 0.999)),
        num_classes=num_classes,
        ema=moving_average(generator, cfg.ema_decay),
    )


def train_step(state: ImagegenState, image: torch.Tensor, mask: torch.Tensor, cfg: ImagegenConfig,
               extra: JointTerm | None = None) -> dict:
    """One discriminator and one generator update on a batch of uint8 images (N, C, H, W) and masks (N, H, W).

    With `extra`, the generator also draws images from extra.masks in the same forward, and
    extra.loss of them joins its loss (joint training with a segmenter); they stay in extra.images.
    """
    device = next(state.generator.parameters()).device
    real, mask = to_input(image).to(device), mask.to(device)
    label_map = one_hot_with_void(mask, state.num_classes)

    state.opt_d.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = state.generator(label_map)
    loss_d = _discriminator_loss(state, real, fake, label_map, mask)
    require_finite(ADVICE, state.global_step + 1, loss_d=loss_d)  # before any weight changes
    loss_d.backward()
    state.opt_d.step()

    state.opt_g.zero_grad(set_to_none=True)
    if extra is None:
        fake = state.generator(label_map)
        parts = _generator_losses(state, real, fake, label_map, mask, cfg)
    else:  # one forward for both: DDP allows one per backward
        drawn = state.generator(torch.cat([label_map, one_hot_with_void(extra.masks.to(device), state.num_classes)]))
        fake, extra.images = drawn[: len(mask)], drawn[len(mask):]
        parts = _generator_losses(state, real, fake, label_map, mask, cfg) | {"loss_joint": extra.loss(extra.images)}
    loss_g = sum(parts.values())
    require_finite(ADVICE, state.global_step + 1, **parts)
    loss_g.backward()
    state.opt_g.step()
    if state.ema is not None:
        state.ema.update_parameters(unwrap(state.generator))
    state.global_step += 1
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **{k: v.detach() for k, v in parts.items()}}


def _discriminator_loss(state, real, fake, label_map, mask) -> torch.Tensor:
    if isinstance(unwrap(state.discriminator), OasisDiscriminator):
        return losses.oasis_discriminator(state.discriminator(real), mask, state.discriminator(fake))
    return losses.hinge_discriminator(state.discriminator(real, label_map), state.discriminator(fake, label_map))


def _generator_losses(state, real, fake, label_map, mask, cfg: ImagegenConfig) -> dict[str, torch.Tensor]:
    with frozen(state.discriminator) as critic:
        if isinstance(critic, OasisDiscriminator):
            parts = {"loss_adv": losses.oasis_generator(critic(fake), mask)}
        else:
            fake_out = critic(fake, label_map)
            parts = {"loss_adv": losses.hinge_generator(fake_out)}
            if cfg.lambda_fm > 0:
                with torch.no_grad():
                    real_out = critic(real, label_map)
                parts["loss_fm"] = cfg.lambda_fm * losses.feature_matching(real_out, fake_out)
    if cfg.generator == "pix2pix" and cfg.lambda_l1 > 0:
        parts["loss_l1"] = cfg.lambda_l1 * F.l1_loss(fake, real)
    return parts


def train_epoch(state: ImagegenState, batches: Iterator, cfg: ImagegenConfig) -> dict[str, float]:
    """Every batch of `batches` once; the mean of each logged loss."""
    for network in (state.generator, state.discriminator):
        network.train()
    totals: dict[str, torch.Tensor] = {}
    count = 0
    for image, mask in batches:
        for key, value in train_step(state, image, mask, cfg).items():
            totals[key] = totals.get(key, 0) + value
        count += 1
    return {key: float(value) / max(count, 1) for key, value in totals.items()}


@torch.no_grad()
def sample(generator: nn.Module, mask: torch.Tensor, num_classes: int, seed: int | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) drawn from masks (N, H, W); the noise drawn from `seed` when given."""
    generator.eval()
    device = next(generator.parameters()).device
    label_map = one_hot_with_void(mask.to(device), num_classes)
    noise = None
    if getattr(generator, "noise_dim", 0):
        source = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        noise = torch.randn(len(mask), generator.noise_dim, generator=source).to(device)
    return to_uint8(generator(label_map, noise)).cpu()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 images, the type of every image in a prepared folder."""
    return ((images.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
