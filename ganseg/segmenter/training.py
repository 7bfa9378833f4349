"""The GAN segmenter's training: its state, one step and one epoch; pure PyTorch, no Ray.

One step updates the discriminator on (image, true mask) against (image, predicted mask), then
the segmenter on cross-entropy + Dice + lambda_adv * adversarial (how the masks reach the
discriminator, and the feature critic: ganseg/segmenter/adversarial.py). With lambda_adv = 0 the
discriminator is skipped entirely and the step is the supervised baseline. Void pixels of the
masks count in no loss: the one-hot truth and the prediction the discriminator sees are both zero there.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ganseg.checkpoints import unwrap
from ganseg.config import Params, TrainConfig
from ganseg.data.datasets import WaitClock, to_input
from ganseg.errors import NonFiniteLossError, require_finite
from ganseg.gan.averaging import moving_average
from ganseg.parallel import frozen
from ganseg.segmenter.adversarial import (
    feature_distance,
    instance_noise_std,
    predicted_mask,
    real_mask,
    with_instance_noise,
)
from ganseg.segmenter.losses import (
    class_weight_tensor,
    discriminator_loss,
    hide_void,
    realness,
    segmentation_loss,
    segmenter_adversarial_loss,
    self_taught_loss,
)
from ganseg.segmenter.networks import build_discriminator, build_segmenter


class BatchMixer(Protocol):
    """Puts generated pairs into the segmenter's batches (ganseg/synthetic_pairs.py): `mix` returns
    (images, masks, generated count, statistics). `joint` is the image generator trained alongside
    (from the first epoch), if any."""

    joint: object | None

    def mix(self, images: torch.Tensor, masks: torch.Tensor,
            segmenter: nn.Module) -> tuple[torch.Tensor, torch.Tensor, int, dict]: ...


@dataclass
class TrainingState:
    """What training changes and carries from step to step: both networks, their optimisers and
    schedulers, the grad scaler, the step count and the segmenter's moving average (a `GanState`)."""

    model_key: ClassVar[str] = "segmenter"
    segmenter: nn.Module
    discriminator: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: str = "fp32"
    channels_last: bool = False
    global_step: int = 0
    class_weights: torch.Tensor | None = None
    ema: AveragedModel | None = None  # moving average of the segmenter, evaluated and exported instead of it

    @property
    def model(self) -> nn.Module:
        return self.segmenter

    @property
    def device_type(self) -> str:
        return next(self.segmenter.parameters()).device.type

    @property
    def eval_segmenter(self) -> nn.Module:
        """The segmenter to validate and export: the moving average when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.segmenter)

    def optimisation(self) -> dict:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d, "sched_g": self.sched_g, "sched_d": self.sched_d,
                "scaler": self.scaler}

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)

    def learning_rates(self) -> dict[str, float]:
        return {"lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}


def build_networks(params: Params, in_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """The U-Net segmenter and the PatchGAN discriminator, initialised from params.seed."""
    torch.manual_seed(params.seed)
    return (
        build_segmenter(params.model, in_channels, num_classes),
        build_discriminator(params.model, in_channels, num_classes),
    )


def build_training_state(
    params: Params,
    in_channels: int,
    num_classes: int,
    class_frequency: list[float] | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda network: network,
) -> TrainingState:
    """Fresh networks (in channels_last memory format with train.channels_last), each passed through
    `wrap` (under Ray Train, its prepare_model: to the device, and into DDP with several workers) and
    compiled with train.compile, then their optimisers, per-epoch schedulers, the fp16 grad scaler,
    class weights (from the training pixel shares `class_frequency`) and the segmenter's moving average."""
    cfg = params.train
    segmenter, discriminator = build_networks(params, in_channels, num_classes)
    if cfg.channels_last:
        segmenter = segmenter.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    segmenter, discriminator = wrap(segmenter), wrap(discriminator)
    opt_g = torch.optim.Adam(segmenter.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    device = next(segmenter.parameters()).device
    if cfg.class_weights == "inverse_sqrt" and not class_frequency:
        raise ValueError("train.class_weights inverse_sqrt needs the training class frequencies")
    weights = class_weight_tensor(cfg.class_weights, class_frequency or [])
    ema = moving_average(segmenter, cfg.ema_decay)
    if cfg.compile:  # in place, after the moving average copied the segmenter: state dict keys stay as they are
        unwrap(segmenter).compile()
        unwrap(discriminator).compile()
    return TrainingState(
        segmenter, discriminator, opt_g, opt_d, _scheduler(opt_g, cfg), _scheduler(opt_d, cfg),
        torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        cfg.precision, cfg.channels_last,
        class_weights=None if weights is None else weights.to(device),
        ema=ema,
    )


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def _prepare_input(state: TrainingState, images: torch.Tensor) -> torch.Tensor:
    x = to_input(images)
    return x.contiguous(memory_format=torch.channels_last) if state.channels_last else x


def train_step(
    state: TrainingState,
    images: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    *,
    adversarial: bool = True,
    unlabelled: torch.Tensor | None = None,
    noise_std: float | None = None,
    generated: int = 0,
) -> dict[str, float]:
    """One discriminator update, then one segmenter update.

    The adversarial term (and with it the discriminator) runs when `adversarial` and lambda_adv > 0.
    `unlabelled` images (no masks) add, in that case, the adversarial term on their predictions and
    the self-taught loss on the pixels the discriminator trusts (semi-supervised mode).
    `noise_std` is this step's instance noise (default: train.instance_noise, not annealed).
    The last `generated` pairs of the batch are generated ones, weighted train.synthetic.weight.
    """
    noise_std = cfg.instance_noise if noise_std is None else noise_std
    adversarial = adversarial and cfg.lambda_adv > 0
    x = _prepare_input(state, images)
    u = _prepare_input(state, unlabelled) if unlabelled is not None and adversarial else None
    inputs = x if u is None else torch.cat([x, u])
    with state.autocast():
        logits_all = state.segmenter(inputs)
    logits_all = logits_all.float()
    logits = logits_all[: len(x)]
    step_stats: dict[str, float] = {}
    if adversarial:
        step_stats |= _discriminator_step(state, x, masks, logits.detach(), cfg, noise_std)
    loss_seg = _mixed_segmentation_loss(state, logits, masks, cfg, generated)
    require_finite(loss_seg=loss_seg)
    loss_g = loss_seg
    if adversarial:
        fake_all = predicted_mask(logits_all, cfg.adv_mask)
        fake_all = torch.cat([hide_void(fake_all[: len(x)], masks), fake_all[len(x):]])  # unlabelled: no void
        fake_all = with_instance_noise(fake_all, noise_std)
        if cfg.adv_loss == "segan":
            real = with_instance_noise(real_mask(masks, logits.shape[1], cfg.real_noise, logits.dtype), noise_std)
            with frozen(state.discriminator) as critic:
                real_features, fake_features = _critic_features(state, x, real, fake_all, critic)
            loss_adv = feature_distance([f.detach() for f in real_features], fake_features)
        else:
            with state.autocast(), frozen(state.discriminator) as critic:
                fake_scores = critic(inputs, fake_all).float()
            loss_adv = segmenter_adversarial_loss(cfg.adv_loss, fake_scores)
        loss_g = loss_g + cfg.lambda_adv * loss_adv
        step_stats["loss_adv"] = loss_adv.item()
        if u is not None:
            loss_semi, used = _self_taught(logits_all[len(x):], fake_scores[len(x):], cfg)
            loss_g = loss_g + cfg.semi.lambda_semi * loss_semi
            step_stats |= {"loss_semi": loss_semi.item(), "semi_pixels": used.item()}
        require_finite(loss_g=loss_g)
    state.opt_g.zero_grad(set_to_none=True)
    state.scaler.scale(loss_g).backward()
    state.scaler.step(state.opt_g)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update_parameters(unwrap(state.segmenter))
    state.global_step += 1
    return step_stats | {"loss_g": loss_g.item(), "loss_seg": loss_seg.item()}


def _mixed_segmentation_loss(state: TrainingState, logits: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig,
                             generated: int) -> torch.Tensor:
    """The segmentation loss of real and generated pairs apart, averaged by count, the generated
    ones weighted train.synthetic.weight."""
    loss = functools.partial(segmentation_loss, dice_weight=cfg.dice_weight, class_weights=state.class_weights)
    real = len(masks) - generated
    if generated == 0:
        return loss(logits, masks)
    generated_loss = cfg.synthetic.weight * loss(logits[real:], masks[real:])
    if real == 0:
        return generated_loss
    return (real * loss(logits[:real], masks[:real]) + generated * generated_loss) / len(masks)


def _discriminator_step(state: TrainingState, x: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor,
                        cfg: TrainConfig, noise_std: float) -> dict[str, float]:
    """Real pairs (image, true mask) against fake ones (image, predicted mask), each formed as
    train.real_noise, adv_mask and instance_noise say (ganseg/segmenter/adversarial.py).

    Both are zero at void pixels, so the discriminator cannot tell them apart there. With
    adv_loss segan the critic maximises the feature distance between the two instead of scoring them.
    """
    real = with_instance_noise(real_mask(masks, logits.shape[1], cfg.real_noise, logits.dtype), noise_std)
    fake = with_instance_noise(hide_void(predicted_mask(logits, cfg.adv_mask), masks), noise_std)
    if cfg.adv_loss == "segan":
        loss_d = -feature_distance(*_critic_features(state, x, real, fake))
        stats = {"loss_d": loss_d.item()}
    else:
        with state.autocast():
            both = state.discriminator(torch.cat([x, x]), torch.cat([real, fake]))
        real_scores, fake_scores = both.float().chunk(2)
        loss_d = discriminator_loss(cfg.adv_loss, real_scores, fake_scores)
        stats = {"loss_d": loss_d.item(), "d_real": real_scores.mean().item(), "d_fake": fake_scores.mean().item()}
    require_finite(loss_d=loss_d)
    state.opt_d.zero_grad(set_to_none=True)
    state.scaler.scale(loss_d).backward()
    state.scaler.step(state.opt_d)
    return stats


def _critic_features(state: TrainingState, x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     critic: nn.Module | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The features of `critic` (default: the discriminator) of (x, real) and of (x, fake[:len(x)]), in one forward."""
    critic = critic or state.discriminator
    with state.autocast():
        both = critic(torch.cat([x, x]), torch.cat([real, fake[: len(x)]]), features=True)
    halves = [feature.float().chunk(2) for feature in both]
    return [real_half for real_half, _ in halves], [fake_half for _, fake_half in halves]


def _self_taught(logits: torch.Tensor, scores: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's patch scores, upsampled to pixels and read as realness in [0, 1] (the same
    meaning for every train.adv_loss), pick the pixels trusted above train.semi.threshold."""
    scores = F.interpolate(scores.detach(), size=logits.shape[-2:], mode="bilinear", align_corners=False)
    return self_taught_loss(logits, realness(cfg.adv_loss, scores)[:, 0], cfg.semi.threshold)


def train_epoch(
    state: TrainingState,
    loader,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    *,
    epoch: int | None = None,
    unlabelled: Iterator[torch.Tensor] | None = None,
    synthetic: BatchMixer | None = None,
) -> dict[str, float]:
    """Mean step statistics over one pass of `loader`, plus images/s and the share of the pass spent
    waiting for batches (waiting_for_data_share); then one scheduler step.

    The adversarial term starts after train.adv_warmup_epochs; batches drawn from `unlabelled`
    (an endless iterator of image batches) join from train.semi.start_epoch; `synthetic` replaces
    part of every batch with generated pairs from train.synthetic.start_epoch (joint training: its
    image generator trains from the first epoch). Without `epoch`, all are on. A NaN or infinite loss
    raises NonFiniteLossError naming `epoch` and the step (1-based).
    """
    state.segmenter.train()
    state.discriminator.train()
    adversarial = epoch is None or epoch > cfg.adv_warmup_epochs
    semi = unlabelled is not None and adversarial and (epoch is None or epoch >= cfg.semi.start_epoch)
    noise_std = instance_noise_std(cfg.instance_noise, epoch, cfg.adv_warmup_epochs, cfg.epochs)
    totals: dict[str, float] = {}
    steps, images_seen, start = 0, 0, time.perf_counter()
    rates = state.learning_rates()
    waiting = WaitClock()
    unlabelled = waiting.wrap(unlabelled) if semi else None
    for images, masks in waiting.wrap(loader):
        images, masks = images.to(device), masks.to(device)
        unlabelled_images = next(unlabelled).to(device) if semi else None
        generated, mixing_stats = 0, {}
        if synthetic is not None and (synthetic.joint is not None or epoch is None or epoch >= cfg.synthetic.start_epoch):
            images, masks, generated, mixing_stats = synthetic.mix(images, masks, state.segmenter)
        try:
            step_stats = mixing_stats | train_step(state, images, masks, cfg, adversarial=adversarial,
                                                   unlabelled=unlabelled_images, noise_std=noise_std, generated=generated)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(err.loss, err.value, epoch, steps + 1, advice=err.advice) from None
        for key, value in step_stats.items():
            totals[key] = totals.get(key, 0.0) + value
        steps += 1
        images_seen += len(images)
    elapsed = time.perf_counter() - start
    state.sched_g.step()
    if cfg.lambda_adv > 0:  # the baseline never steps the discriminator's optimiser
        with warnings.catch_warnings():  # in warm-up epochs D has not stepped yet; its schedule runs on regardless
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            state.sched_d.step()
    means = {key: value / max(steps, 1) for key, value in totals.items()}
    return means | rates | {"images_per_s": images_seen / elapsed if elapsed > 0 else 0.0,
                            "waiting_for_data_share": waiting.seconds / elapsed if elapsed > 0 else 0.0}
