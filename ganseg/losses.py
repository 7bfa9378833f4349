"""Losses: supervised (cross-entropy + soft Dice) and adversarial (hinge, vanilla, least squares)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice between softmax(logits) and one-hot target, per image and class, averaged.

    Per image rather than over the whole batch, so the loss of a batch is the mean of its
    images' losses and data-parallel shards average to exactly the single-process gradient.
    """
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    one_hot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2 * intersection + eps) / (total + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    return F.cross_entropy(logits, target) + dice_weight * soft_dice_loss(logits, target)


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


def generator_adversarial_loss(kind: str, fake_scores: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_scores.mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_scores, torch.ones_like(fake_scores))
    if kind == "lsgan":
        return ((fake_scores - 1) ** 2).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")
