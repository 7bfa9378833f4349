"""What the discriminator sees, and the feature critic: the remedies for a discriminator that can
tell real masks from predicted ones by their values alone.

A true mask is one-hot (every value exactly 0 or 1); a softmax prediction never is. Fed as they
are (`adv_mask: soft`), any value strictly between 0 and 1 gives a prediction away, and the
adversarial term mostly teaches the segmenter to be confident. The remedies:

- `real_noise` (label smoothing with noise): each true pixel's one-hot gets random mass on every
  class, renormalised, so real masks are soft too;
- `instance_noise`: Gaussian noise on the mask channels of real and predicted pairs alike, its
  standard deviation annealed linearly to 0 over the adversarial epochs (Sønderby et al. 2017);
- `adv_mask: straight_through`: the discriminator sees the one-hot of the predicted classes, the
  segmenter gets the softmax's gradient; `gumbel`: the same with classes drawn by the
  Gumbel-softmax (tau 1);
- `adv_loss: segan`: no real/fake scores at all. The critic's features of (image, truth) and
  (image, prediction) at every layer are compared by L1; the discriminator maximises that
  distance, the segmenter minimises it (SegAN, Xue et al. 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganseg.segmenter.losses import hide_void, valid_one_hot


def predicted_mask(logits: torch.Tensor, how: str) -> torch.Tensor:
    """The predicted mask the discriminator sees, as (N, K, H, W) class maps that carry the softmax's gradient."""
    probs = logits.softmax(1)
    if how == "soft":
        return probs
    if how == "gumbel":
        return F.gumbel_softmax(logits, tau=1.0, hard=True, dim=1)
    if how == "straight_through":
        hard = F.one_hot(probs.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
        return hard + (probs - probs.detach())  # exactly 0 + one-hot forward; the softmax's gradient back
    raise ValueError(f"unknown adv_mask {how!r}")


def real_mask(target: torch.Tensor, num_classes: int, noise: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The true mask the discriminator sees: one-hot, with `noise` > 0 plus U(0, noise) on every
    class, renormalised to sum 1; all zeros at void pixels."""
    one_hot = valid_one_hot(target, num_classes, dtype)
    if noise <= 0:
        return one_hot
    noisy = one_hot + noise * torch.rand_like(one_hot)
    return hide_void(noisy / noisy.sum(1, keepdim=True), target)


def instance_noise_std(start_std: float, epoch: int | None, warmup_epochs: int, epochs: int) -> float:
    """`start_std` in the first adversarial epoch, falling linearly to 0 in the last one.

    Without an epoch (a lone step) the full `start_std`.
    """
    if start_std <= 0 or epoch is None:
        return max(start_std, 0.0)
    adversarial_epochs = epochs - warmup_epochs
    if adversarial_epochs <= 1:
        return start_std
    progress = (epoch - warmup_epochs - 1) / (adversarial_epochs - 1)
    return start_std * (1.0 - min(max(progress, 0.0), 1.0))


def with_instance_noise(mask: torch.Tensor, std: float) -> torch.Tensor:
    return mask + std * torch.randn_like(mask) if std > 0 else mask


def feature_distance(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """SegAN's multi-scale L1: the mean absolute difference at each layer, averaged over layers.

    Every image has the same size, so the batch mean is the mean of per-image means: exact under
    data parallelism.
    """
    distances = [(real - fake).abs().mean() for real, fake in zip(real_features, fake_features, strict=True)]
    return torch.stack(distances).mean()
