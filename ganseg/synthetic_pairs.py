"""Generated (image, mask) pairs in the segmenter's batches (train.synthetic); pure PyTorch, no Ray.

The last `share` of every training batch is replaced: its masks (as they are, or deformed into
new layouts) go through the mask -> image generator, and the drawn images take the place of the
real ones. The generator is either one trained before (frozen here), or trained here with the
segmenter (joint): each step it makes its own GAN update on the real labelled pairs, plus
joint_lambda * the segmenter's cross-entropy on the images it draws (GenSeg-style), so that it
learns to draw images the segmenter learns from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from ganseg.config import GeneratedPairsConfig, ImagegenConfig, MaskDeformConfig
from ganseg.data.datasets import to_input
from ganseg.data.void import VOID
from ganseg.imagegen.training import ImagegenState, JointTerm, sample, to_uint8
from ganseg.imagegen.training import train_step as imagegen_step
from ganseg.parallel import frozen
from ganseg.segmenter.losses import cross_entropy_per_image


def mask_deformation(cfg: MaskDeformConfig, size: int) -> v2.Compose:
    """Random crop, rotation/shear and elastic warp of a mask (nearest neighbour: ids stay ids)."""
    steps: list = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if cfg.crop_scale < 1:
        steps.append(v2.RandomResizedCrop(size, scale=(cfg.crop_scale, 1.0), ratio=(0.8, 1.25)))
    if cfg.affine_degrees > 0:
        steps.append(v2.RandomAffine(degrees=cfg.affine_degrees, scale=(0.9, 1.1), shear=cfg.affine_degrees / 2))
    if cfg.elastic_alpha > 0:
        steps.append(v2.ElasticTransform(alpha=cfg.elastic_alpha, sigma=5.0))
    return v2.Compose(steps)


def deform_masks(masks: torch.Tensor, cfg: MaskDeformConfig) -> torch.Tensor:
    """New layouts from masks (N, H, W): each warped on its own, reflected past its border first (so
    that the warp pulls in more of the layout instead of unannotated void), then with chance `mix`
    a rectangle of another mask of the batch pasted in."""
    size = masks.shape[-1]
    pad = size // 4
    transform = mask_deformation(cfg, size + 2 * pad)
    warped = []
    for mask in masks:
        padded = F.pad(mask[None, None].float(), (pad, pad, pad, pad), mode="reflect")[0].long()
        warped.append(transform(tv_tensors.Mask(padded)).as_subclass(torch.Tensor)[0, pad:-pad, pad:-pad])
    return _mixed(torch.stack(warped), cfg.mix)


def _mixed(masks: torch.Tensor, chance: float) -> torch.Tensor:
    """CutMix of masks: a rectangle (1/4 to 1/2 of each side) copied from another mask of the batch."""
    if len(masks) < 2 or chance <= 0:
        return masks
    out = masks.clone()
    size = masks.shape[-1]
    for i in range(len(masks)):
        if torch.rand(()) >= chance:
            continue
        other = (i + int(torch.randint(1, len(masks), ()))) % len(masks)
        h, w = (int(torch.randint(size // 4, size // 2 + 1, ())) for _ in range(2))
        top, left = int(torch.randint(0, size - h + 1, ())), int(torch.randint(0, size - w + 1, ()))
        out[i, top:top + h, left:left + w] = masks[other, top:top + h, left:left + w]
    return out


class GeneratedPairs:
    """Makes the generated share of each training batch.

    `generator`: a trained mask -> image generator, used as it is; or `joint`: an image generator's
    training state (with `imagegen` settings), trained here alongside the segmenter.
    `judge`: with drop_disagreeing, the segmenter whose class, where it differs from the mask,
    voids the pixel.
    """

    def __init__(self, cfg: GeneratedPairsConfig, num_classes: int, generator: nn.Module | None = None,
                 joint: ImagegenState | None = None, imagegen: ImagegenConfig | None = None,
                 judge: nn.Module | None = None):
        if (generator is None) == (joint is None):
            raise ValueError("GeneratedPairs needs either a trained generator or a joint training state")
        if cfg.drop_disagreeing and judge is None:
            raise ValueError("train.synthetic.drop_disagreeing needs a judge segmenter")
        self.cfg, self.num_classes = cfg, num_classes
        self.generator, self.joint, self.imagegen = generator, joint, imagegen
        self.judge = judge.eval() if judge is not None else None  # a fixed model: only ever read
        if joint is not None:
            joint.generator.train()
            joint.discriminator.train()

    def count(self, batch: int) -> int:
        """How many tiles of a batch of `batch` are generated (at least one when share > 0)."""
        return min(batch, max(1, round(self.cfg.share * batch))) if self.cfg.share > 0 else 0

    def mix(self, images: torch.Tensor, masks: torch.Tensor,
            segmenter: nn.Module) -> tuple[torch.Tensor, torch.Tensor, int, dict]:
        """(images, masks, generated count, statistics): the batch with its last tiles generated.

        `segmenter` is the one being trained: joint training's cross-entropy is read from it.
        """
        k = self.count(len(masks))
        if k == 0:
            return images, masks, 0, {}
        layouts = masks[-k:]
        if self.cfg.masks == "deformed":
            layouts = deform_masks(layouts.cpu(), self.cfg.deform).to(masks.device)
        stats: dict[str, float] = {}
        if self.joint is None:
            drawn = sample(self.generator, layouts, self.num_classes).to(images.device)
        else:
            drawn, stats = self._joint_step(images, masks, layouts, segmenter)
        if self.cfg.drop_disagreeing:
            layouts, stats["voided_share"] = self._judged(drawn, layouts)
        real = len(masks) - k
        return torch.cat([images[:real], drawn]), torch.cat([masks[:real], layouts]), k, stats

    def _joint_step(self, images, masks, layouts, segmenter) -> tuple[torch.Tensor, dict]:
        """The image generator's GAN update on the real pairs, with the segmenter's cross-entropy on
        the images drawn from `layouts` added to its loss; those images, and the step's losses."""
        def segmenter_loss(drawn: torch.Tensor) -> torch.Tensor:
            with frozen(segmenter) as bare:
                logits = bare(drawn).float()
            return self.cfg.joint_lambda * cross_entropy_per_image(logits, layouts)

        term = JointTerm(layouts, segmenter_loss)
        losses = imagegen_step(self.joint, images, masks, self.imagegen, extra=term)
        stats = {f"imagegen_{key}": float(value) for key, value in losses.items()}
        return to_uint8(term.images), stats

    @torch.no_grad()
    def _judged(self, drawn: torch.Tensor, layouts: torch.Tensor) -> tuple[torch.Tensor, float]:
        predicted = self.judge(to_input(drawn)).argmax(1)
        disagree = (predicted != layouts) & (layouts != VOID)
        return torch.where(disagree, torch.full_like(layouts, VOID), layouts), disagree.float().mean().item()
