"""Losses: supervised (cross-entropy + soft Dice) and adversarial (hinge, vanilla, least squares)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganseg.data.void import VOID


def valid_one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K, H, W) one-hot of class ids (N, H, W); all zeros at void pixels."""
    valid = target != VOID
    one_hot = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).to(dtype)
    return one_hot * valid[:, None].to(dtype)


def hide_void(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, K, H, W) zeroed at the void pixels of `target` (N, H, W), like its one-hot."""
    return probs * (target != VOID)[:, None].to(probs.dtype)


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - soft Dice between softmax(logits) and one-hot target over the valid (non-void) pixels,
    per image and class, averaged (over classes with `class_weights` when given).

    Per image rather than over the whole batch, so the loss of a batch is the mean of its
    images' losses and data-parallel shards average to exactly the single-process gradient.
    """
    probs = hide_void(logits.softmax(dim=1), target)
    one_hot = valid_one_hot(target, logits.shape[1], probs.dtype)
    dims = (2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + eps) / (total + eps)  # (N, K); 1 for a class absent from an image, or a void image
    if class_weights is None:
        return 1.0 - dice.mean()
    return 1.0 - ((dice * class_weights).sum(1) / class_weights.sum()).mean()


def cross_entropy_per_image(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy averaged over each image's valid pixels (weighted by class when given), then over images.

    Void pixels have no loss and no gradient. An image without weighted pixels (void throughout, or
    holding only classes of weight 0) adds 0 and no gradient but still counts as an image, so
    data-parallel shards average to exactly the single-process loss.
    """
    valid = target != VOID
    per_pixel = F.cross_entropy(logits, target, reduction="none", ignore_index=VOID)
    weight = valid.to(per_pixel.dtype)
    if class_weights is not None:
        weight = weight * class_weights[torch.where(valid, target, 0)]
    dims = (1, 2)
    # an image without weighted pixels has a zero numerator; the clamp only avoids 0 / 0
    return ((per_pixel * weight).sum(dims) / weight.sum(dims).clamp(min=1e-12)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy + dice_weight * soft Dice over the valid pixels; both weighted per class when
    `class_weights` is given.

    The weighted cross-entropy of an image is normalised by the weights of its pixels (PyTorch's
    'mean'), so its scale does not depend on how rare the image's classes are.
    """
    cross_entropy = cross_entropy_per_image(logits, target, class_weights)
    return cross_entropy + dice_weight * soft_dice_loss(logits, target, class_weights=class_weights)


def class_weight_tensor(setting: str | list[float], train_frequency: list[float]) -> torch.Tensor | None:
    """Per-class loss weights: None for 'none'; for 'inverse_sqrt' 1/sqrt(pixel share), scaled to mean 1.

    A class absent from the training pixels gets the weight of the rarest present class.
    """
    if setting == "none":
        return None
    if isinstance(setting, list):
        return torch.tensor(setting, dtype=torch.float32)
    share = torch.tensor(train_frequency, dtype=torch.float64)
    present = share > 0
    share = torch.where(present, share, share[present].min())
    weights = share.rsqrt()
    return (weights / weights.mean()).float()


def self_taught_loss(logits: torch.Tensor, confidence: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hung et al.'s semi-supervised loss: cross-entropy against the segmenter's own predicted
    classes, on the pixels whose discriminator confidence (N, H, W) exceeds `threshold`.

    Averaged over each image's trusted pixels, then over images: an image with none adds 0 but
    still counts, so data-parallel shards average to exactly the single-process loss.
    Returns (loss, share of pixels used).
    """
    pseudo = logits.detach().argmax(1)
    trusted = (confidence > threshold).to(logits.dtype)
    per_pixel = F.cross_entropy(logits, pseudo, reduction="none")
    dims = (1, 2)
    return ((per_pixel * trusted).sum(dims) / trusted.sum(dims).clamp(min=1)).mean(), trusted.mean()


def realness(kind: str, scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's scores as how real it finds the masks, in [0, 1], with one meaning for every
    adversarial loss: the score's place between the loss's target for predicted masks (0) and for
    real ones (1). hinge: -1 and +1, (s + 1) / 2; lsgan: 0 and 1, s; both clipped to [0, 1].
    vanilla: sigmoid(s), the probability of 'real' that binary cross-entropy calibrates (Hung et al.).
    """
    if kind == "hinge":
        return ((scores + 1) / 2).clamp(0, 1)
    if kind == "lsgan":
        return scores.clamp(0, 1)
    if kind == "vanilla":
        return scores.sigmoid()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def discriminator_loss(kind: str, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    if kind == "vanilla":
        return (
            F.binary_cross_entropy_with_logits(real_scores, torch.ones_like(real_scores))
            + F.binary_cross_entropy_with_logits(fake_scores, torch.zeros_like(fake_scores))
        )
    if kind == "lsgan":
        return ((real_scores - 1) ** 2).mean() + (fake_scores**2).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def segmenter_adversarial_loss(kind: str, fake_scores: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_scores.mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores))
    if kind == "lsgan":
        return ((fake_scores - 1) ** 2).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")
