"""The GAN segmenter's training step, validation and checkpoint state: pure PyTorch, no Ray.

One step updates the discriminator on (image, one-hot truth) against (image, softmax prediction),
then the generator on cross-entropy + Dice + lambda_adv * adversarial. With lambda_adv = 0 the
discriminator is skipped entirely and the step is the supervised baseline. Void pixels of the
masks count in no loss: the one-hot truth and the prediction the discriminator sees are both zero there.
"""

from __future__ import annotations

import pickle
import random
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganseg.config import Params, TrainConfig
from ganseg.contracts import MODEL_CARD, ModelCard, read_model_card, write_model_card
from ganseg.data.datasets import to_input
from ganseg.errors import CheckpointError, NonFiniteLossError
from ganseg.losses import (
    class_weight_tensor,
    discriminator_loss,
    generator_adversarial_loss,
    hide_void,
    segmentation_loss,
    self_taught_loss,
    valid_one_hot,
)
from ganseg.metrics import confusion_matrix
from ganseg.models import UNet, build_discriminator, build_generator


@dataclass
class GanParts:
    generator: nn.Module
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
    ema: AveragedModel | None = None  # moving average of the generator, evaluated and exported instead of it

    @property
    def device_type(self) -> str:
        return next(self.generator.parameters()).device.type

    @property
    def eval_generator(self) -> nn.Module:
        """The generator to validate and export: the moving average when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.generator)

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)

    def learning_rates(self) -> dict[str, float]:
        return {"lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def build_networks(params: Params, in_channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(params.seed)
    return (
        build_generator(params.model, in_channels, num_classes),
        build_discriminator(params.model, in_channels, num_classes),
    )


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def build_optimizers(
    generator: nn.Module, discriminator: nn.Module, cfg: TrainConfig, class_frequency: list[float] | None = None
) -> GanParts:
    """Optimisers, per-epoch schedulers, the fp16 grad scaler, class weights (from the training
    pixel shares `class_frequency`) and the generator's moving average, around placed networks."""
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=(0.5, 0.999))
    device = next(generator.parameters()).device
    if cfg.class_weights == "inverse_sqrt" and not class_frequency:
        raise ValueError("train.class_weights inverse_sqrt needs the training class frequencies")
    weights = class_weight_tensor(cfg.class_weights, class_frequency or [])
    ema = None
    if cfg.ema_decay > 0:
        ema = AveragedModel(unwrap(generator), multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    return GanParts(
        generator, discriminator, opt_g, opt_d, _scheduler(opt_g, cfg), _scheduler(opt_d, cfg),
        torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        cfg.precision, cfg.channels_last,
        class_weights=None if weights is None else weights.to(device),
        ema=ema,
    )


def _prepare_input(parts: GanParts, images: torch.Tensor) -> torch.Tensor:
    x = to_input(images)
    return x.contiguous(memory_format=torch.channels_last) if parts.channels_last else x


def train_step(
    parts: GanParts,
    images: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainConfig,
    *,
    adversarial: bool = True,
    unlabelled: torch.Tensor | None = None,
) -> dict[str, float]:
    """One discriminator update, then one generator update.

    The adversarial term (and with it the discriminator) runs when `adversarial` and lambda_adv > 0.
    `unlabelled` images (no masks) add, in that case, the adversarial term on their predictions and
    the self-taught loss on the pixels the discriminator trusts (semi-supervised mode).
    """
    adversarial = adversarial and cfg.lambda_adv > 0
    x = _prepare_input(parts, images)
    u = _prepare_input(parts, unlabelled) if unlabelled is not None and adversarial else None
    inputs = x if u is None else torch.cat([x, u])
    with parts.autocast():
        logits_all = parts.generator(inputs)
    logits_all = logits_all.float()
    logits = logits_all[: len(x)]
    stats: dict[str, float] = {}
    if adversarial:
        stats |= _discriminator_step(parts, x, masks, logits.detach(), cfg)
    loss_seg = segmentation_loss(logits, masks, cfg.dice_weight, parts.class_weights)
    require_finite(loss_seg=loss_seg)
    loss_g = loss_seg
    if adversarial:
        probs_all = logits_all.softmax(1)
        probs_all = torch.cat([hide_void(probs_all[: len(x)], masks), probs_all[len(x):]])  # unlabelled: no void
        with parts.autocast():
            fake_scores = parts.discriminator(inputs, probs_all).float()
        loss_adv = generator_adversarial_loss(cfg.adv_loss, fake_scores)
        loss_g = loss_g + cfg.lambda_adv * loss_adv
        stats["loss_adv"] = loss_adv.item()
        if u is not None:
            loss_semi, used = _self_taught(logits_all[len(x):], fake_scores[len(x):], cfg)
            loss_g = loss_g + cfg.semi.lambda_semi * loss_semi
            stats |= {"loss_semi": loss_semi.item(), "semi_pixels": used.item()}
        require_finite(loss_g=loss_g)
    parts.opt_g.zero_grad(set_to_none=True)
    parts.scaler.scale(loss_g).backward()
    parts.scaler.step(parts.opt_g)
    parts.scaler.update()
    if parts.ema is not None:
        parts.ema.update_parameters(unwrap(parts.generator))
    parts.global_step += 1
    return stats | {"loss_g": loss_g.item(), "loss_seg": loss_seg.item()}


def _discriminator_step(parts: GanParts, x: torch.Tensor, masks: torch.Tensor, logits: torch.Tensor,
                        cfg: TrainConfig) -> dict[str, float]:
    """Real pairs (image, one-hot truth) against fake ones (image, predicted probabilities).

    Both are zero at void pixels, so the discriminator cannot tell them apart there.
    """
    real = valid_one_hot(masks, logits.shape[1], logits.dtype)
    fake = hide_void(logits.softmax(1), masks)
    with parts.autocast():
        both = parts.discriminator(torch.cat([x, x]), torch.cat([real, fake]))
    real_scores, fake_scores = both.float().chunk(2)
    loss_d = discriminator_loss(cfg.adv_loss, real_scores, fake_scores)
    require_finite(loss_d=loss_d)
    parts.opt_d.zero_grad(set_to_none=True)
    parts.scaler.scale(loss_d).backward()
    parts.scaler.step(parts.opt_d)
    return {"loss_d": loss_d.item(), "d_real": real_scores.mean().item(), "d_fake": fake_scores.mean().item()}


def _self_taught(logits: torch.Tensor, scores: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's patch scores, upsampled to pixels and squashed to (0, 1), pick the trusted pixels."""
    confidence = F.interpolate(scores.detach(), size=logits.shape[-2:], mode="bilinear", align_corners=False)
    return self_taught_loss(logits, confidence.sigmoid()[:, 0], cfg.semi.threshold)


def require_finite(**losses: torch.Tensor) -> None:
    for name, loss in losses.items():
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(name, loss.item())


def train_epoch(
    parts: GanParts,
    loader,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    *,
    epoch: int | None = None,
    unlabelled: Iterator[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Mean step statistics over one pass of `loader`, plus images/s; then one scheduler step.

    The adversarial term starts after train.adv_warmup_epochs; batches drawn from `unlabelled`
    (an endless iterator of image batches) join from train.semi.start_epoch. Without `epoch`, both
    are on. A NaN or infinite loss raises NonFiniteLossError naming `epoch` and the step (1-based).
    """
    parts.generator.train()
    parts.discriminator.train()
    adversarial = epoch is None or epoch > cfg.adv_warmup_epochs
    semi = unlabelled is not None and adversarial and (epoch is None or epoch >= cfg.semi.start_epoch)
    totals: dict[str, float] = {}
    steps, images_seen, start = 0, 0, time.perf_counter()
    rates = parts.learning_rates()
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        extra = next(unlabelled).to(device) if semi else None
        try:
            step_stats = train_step(parts, images, masks, cfg, adversarial=adversarial, unlabelled=extra)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(err.loss, err.value, epoch, steps + 1) from None
        for key, value in step_stats.items():
            totals[key] = totals.get(key, 0.0) + value
        steps += 1
        images_seen += len(images)
    elapsed = time.perf_counter() - start
    parts.sched_g.step()
    if cfg.lambda_adv > 0:  # the baseline never steps the discriminator's optimiser
        with warnings.catch_warnings():  # in warm-up epochs D has not stepped yet; its schedule runs on regardless
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            parts.sched_d.step()
    means = {key: value / max(steps, 1) for key, value in totals.items()}
    return means | rates | {"images_per_s": images_seen / elapsed if elapsed > 0 else 0.0}


@torch.no_grad()
def predict(generator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class ids (N, H, W) for uint8 images (N, C, H, W)."""
    return generator(to_input(images)).argmax(1)


@torch.no_grad()
def confusion_over(generator: nn.Module, loader, num_classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    generator.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        total += confusion_matrix(predict(generator, images), masks, num_classes)
    return total


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Every index exactly once across ranks (unlike DistributedSampler, which pads)."""
    return list(range(rank, length, world_size))


def training_state(parts: GanParts, epoch: int, history: list[dict], extra: dict | None = None) -> dict:
    """Everything needed to continue exactly where training stopped."""
    return {
        "generator": unwrap(parts.generator).state_dict(),
        "discriminator": unwrap(parts.discriminator).state_dict(),
        "opt_g": parts.opt_g.state_dict(),
        "opt_d": parts.opt_d.state_dict(),
        "sched_g": parts.sched_g.state_dict(),
        "sched_d": parts.sched_d.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "epoch": epoch,
        "global_step": parts.global_step,
        "rng": rng_state(),
        "history": history,
        **_ema_state(parts),
        **(extra or {}),
    }


def _ema_state(parts: GanParts) -> dict:
    if parts.ema is None:
        return {}
    return {"ema_generator": parts.ema.module.state_dict(), "ema_updates": parts.ema.n_averaged.clone()}


def export_weights(state: dict) -> dict:
    """The generator weights to export from a training state: the moving average when there is one."""
    return state.get("ema_generator", state["generator"])


TRAINING_STATE_KEYS = ("generator", "discriminator", "opt_g", "opt_d", "sched_g", "sched_d", "scaler",
                       "epoch", "global_step", "rng", "history")


def read_training_state(path: Path) -> dict:
    """A checkpoint written by `training_state`; CheckpointError if it is not one."""
    state = load_weights_file(path)
    missing = [key for key in TRAINING_STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a ganseg training checkpoint (no {', '.join(missing)})")
    return state


def load_networks(generator: nn.Module, discriminator: nn.Module, state: dict, path: Path) -> None:
    """Both networks' weights from a training state; CheckpointError naming the file if they do not fit."""
    load_matching(unwrap(generator), state["generator"], path, "generator")
    load_matching(unwrap(discriminator), state["discriminator"], path, "discriminator")


def restore_training_state(parts: GanParts, path: Path) -> dict:
    """Load a checkpoint written by `training_state`; CheckpointError if it is not one for these networks."""
    state = read_training_state(path)
    load_networks(parts.generator, parts.discriminator, state, path)
    for name in ("opt_g", "opt_d", "sched_g", "sched_d", "scaler"):
        try:
            getattr(parts, name).load_state_dict(state[name])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: the {name} state does not fit these networks ({err})") from None
    if parts.ema is not None:
        if "ema_generator" not in state:
            raise CheckpointError(f"{path}: has no generator moving average, but train.ema_decay is on")
        load_matching(parts.ema.module, state["ema_generator"], path, "ema_generator")
        parts.ema.n_averaged.copy_(state["ema_updates"])
    parts.global_step = state["global_step"]
    set_rng_state(state["rng"])
    return state


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2])},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))


def load_weights_file(path: Path) -> Any:
    """torch.load limited to tensors and plain containers (weights_only): a file can never run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if "GLOBAL" in detail:  # a reference to Python code, which only a full unpickler would run
            reason = f"refused: it holds Python objects, not just weights ({detail})"
        else:
            reason = f"not a readable PyTorch weights file ({detail})"
    except Exception as err:  # on arbitrary bytes torch.load fails in many ways (even KeyError)
        reason = f"not a readable PyTorch weights file ({type(err).__name__}: {_first_line(err)})"
    raise CheckpointError(f"{path}: {reason}")


def _unpickler_detail(err: Exception) -> str:
    """The specific line of torch's weights-only refusal, without its generic advice."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(err).splitlines()]
    specific = [line for line in lines if line and not line.startswith(boilerplate)]
    return specific[0] if specific else _first_line(err)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def load_matching(module: nn.Module, weights: Any, path: Path, what: str) -> None:
    """load_state_dict, or a CheckpointError naming the file and how its tensors differ from `module`'s."""
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: the {what} entry is not a state dict of tensors")
    differences = state_dict_differences(module.state_dict(), weights)
    if differences:
        raise CheckpointError(
            f"{path}: the {what} weights are for another architecture: {'; '.join(differences)}"
        )
    module.load_state_dict(weights)


def state_dict_differences(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and reshaped tensors, with examples; empty when `found` fits."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    differences = [
        f"{len(keys)} {label} tensor(s) ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for label, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    if reshaped:
        first = reshaped[0]
        differences.append(
            f"{len(reshaped)} tensor(s) of another shape (e.g. {first}: {tuple(found[first].shape)} in the file,"
            f" {tuple(expected[first].shape)} in the model)"
        )
    return differences


MODEL_WEIGHTS = "generator.pt"


def export_model(out_dir: Path, weights: dict, card: ModelCard) -> None:
    """Write a self-describing model folder: the generator's weights and the card to rebuild and use it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / MODEL_WEIGHTS)
    write_model_card(out_dir, card)


def load_model(model_dir: str | Path) -> tuple[UNet, ModelCard]:
    """The generator of an exported model folder; CheckpointError if its files do not fit together."""
    model_dir = Path(model_dir)
    card_path = model_dir / MODEL_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a ganseg model folder (no {MODEL_CARD})")
    card = read_model_card(card_path)
    generator = build_generator(card.model, card.in_channels, card.num_classes)
    weights_path = model_dir / MODEL_WEIGHTS
    weights = load_weights_file(weights_path)
    try:
        load_matching(generator, weights, weights_path, "generator")
    except CheckpointError as err:
        raise CheckpointError(f"{err}\n  ({card_path} describes {card.describe_network()})") from None
    return generator.eval(), card
