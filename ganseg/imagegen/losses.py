"""The image generator's losses: hinge adversarial terms and feature matching for the PatchGANs,
class-balanced (N+1)-class cross-entropy for the OASIS discriminator, L1 for pix2pix."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganseg.data.void import VOID


def hinge_discriminator(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean over the scales of the hinge loss on each scale's patch scores (the last activation)."""
    terms = [F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_generator(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([-f[-1].mean() for f in fake]).mean()


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminator's activations of the real and the generated image, every layer
    but the scores, every scale (pix2pixHD); the real side is a fixed target."""
    terms = [F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake) for r, f in zip(rs[:-1], fs[:-1])]
    return torch.stack(terms).mean()


def class_balance(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """OASIS's weights: each class present in the batch weighs in inversely to its pixel count, so
    that rare classes count as much as common ones; classes absent from the batch get 0."""
    counts = torch.bincount(mask[mask != VOID].flatten(), minlength=num_classes)[:num_classes].float()
    present = counts > 0
    weights = torch.where(present, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts))
    return weights / weights[present].mean() if present.any() else weights


def oasis_discriminator(real_logits: torch.Tensor, mask: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Real images' pixels into their classes (class-balanced, void ignored); generated images'
    pixels into the extra "fake" class."""
    fake_class = real_logits.shape[1] - 1
    fake = F.cross_entropy(fake_logits, torch.full_like(mask, fake_class).long())
    return _balanced_cross_entropy(real_logits, mask) + fake


def oasis_generator(fake_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The generator wants every pixel of its image read as the class its mask asked for."""
    return _balanced_cross_entropy(fake_logits, mask)


def _balanced_cross_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy over the annotated pixels; 0 (with a gradient path) when there are none."""
    if not (mask != VOID).any():
        return logits.sum() * 0
    real_classes = logits.shape[1] - 1
    weights = torch.cat([class_balance(mask, real_classes), torch.zeros(1, device=mask.device)])
    return F.cross_entropy(logits, mask.long(), weight=weights, ignore_index=VOID)
