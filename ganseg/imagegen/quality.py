"""How good generated images are, judged without any downloaded network.

A trained segmenter (the judge) stands in for the Inception network of FID/KID and for the FCN of
pix2pix's FCN-score:
- `judge_miou`: the judge's mIoU on images against the masks they were drawn from; on generated
  images next to real ones, the ratio is the headline figure (1 = as segmentable as real images);
- `kid`: Kernel Inception Distance (torchmetrics) on the judge's encoder features;
- `diversity`: mean 1 - MS-SSIM between images drawn from one mask (0 = the noise is ignored);
- `nearest_train_distance`: each image's distance to its nearest training image; generated images
  much closer than real test images are would mean memorised ones.
Images are uint8 (N, C, H, W) and masks (N, H, W) class ids with VOID, at the tile size.
"""

from __future__ import annotations

import itertools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ganseg.data.datasets import to_input
from ganseg.gan.networks import UNet
from ganseg.metrics import confusion_matrix, scores

MS_SSIM_KERNEL = 7  # small windows, so that 64 px tiles still have 3 scales
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al.'s weights, finest scale first


class JudgeFeatures(nn.Module):
    """The judge U-Net's encoder activations, each averaged over the image and joined: one vector
    per image (KID's feature space). Input uint8 images."""

    def __init__(self, judge: UNet):
        super().__init__()
        self.judge = judge.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x, found = to_input(images), []
        for i, block in enumerate(self.judge.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            found.append(x.mean(dim=(2, 3)))
        return torch.cat(found, dim=1).double()


@torch.no_grad()
def judge_confusion(judge: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int,
                    batch_size: int = 32) -> torch.Tensor:
    """The judge's confusion matrix on `images` against the masks they were drawn from (on the judge's device)."""
    judge.eval()
    device = next(judge.parameters(), torch.empty(0)).device  # a judge without weights reads on the CPU
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for start in range(0, len(images), batch_size):
        pred = judge(to_input(images[start:start + batch_size]).to(device)).argmax(1)
        confusion += confusion_matrix(pred, masks[start:start + batch_size].to(device), num_classes)
    return confusion


def judge_miou(judge: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int,
               batch_size: int = 32) -> float:
    return scores(judge_confusion(judge, images, masks, num_classes, batch_size).cpu())["miou"]


def kid(
    judge: UNet, real: torch.Tensor, generated: torch.Tensor, seed: int = 0, subsets: int = 50
) -> tuple[float, float]:
    """KID (mean, std over random subsets) between real and generated images, on the judge's features."""
    from torchmetrics.image.kid import KernelInceptionDistance  # here: training workers import this module too

    with warnings.catch_warnings():  # that it keeps every feature vector: a few hundred numbers per image here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=JudgeFeatures(judge), subsets=subsets,
                                         subset_size=max(2, min(len(real), len(generated), 2000) // 2))
    for start in range(0, len(real), 64):
        metric.update(real[start:start + 64], real=True)
    for start in range(0, len(generated), 64):
        metric.update(generated[start:start + 64], real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the subsets are drawn with torch's global generator
        mean, std = metric.compute()
    return float(mean), float(std)


def ms_ssim_scales(side: int) -> int:
    """How many of MS-SSIM's scales fit an image of this side: each halves it, and the smallest must
    still hold a window."""
    return max(1, min(len(MS_SSIM_BETAS), int(torch.log2(torch.tensor(side / (MS_SSIM_KERNEL - 1)))) + 1))


def diversity(samples: torch.Tensor) -> float:
    """Mean 1 - MS-SSIM over every pair of images drawn from one mask. `samples` (M, K, C, H, W):
    K images for each of M masks."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure  # as kid's

    m, k = samples.shape[:2]
    if k < 2:
        raise ValueError("diversity needs at least 2 images per mask")
    scales = ms_ssim_scales(min(samples.shape[-2:]))
    betas = tuple(b / sum(MS_SSIM_BETAS[:scales]) for b in MS_SSIM_BETAS[:scales])
    pairs = list(itertools.combinations(range(k), 2))
    first = torch.cat([samples[:, i] for i, _ in pairs]).float() / 255
    second = torch.cat([samples[:, j] for _, j in pairs]).float() / 255
    similarity = multiscale_structural_similarity_index_measure(
        first, second, data_range=1.0, kernel_size=MS_SSIM_KERNEL, betas=betas, reduction="none"
    )
    return float((1 - similarity).mean())


def nearest_train_distance(images: torch.Tensor, train: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Per image, the root-mean-square pixel difference (0..1 scale) to its nearest training image."""
    bank = train.flatten(1).float() / 255
    nearest = []
    for start in range(0, len(images), batch_size):
        query = images[start:start + batch_size].flatten(1).float() / 255
        distances = torch.cdist(query, bank, compute_mode="donot_use_mm_for_euclid_dist")  # exact: a copy is at 0
        nearest.append(distances.min(dim=1).values / bank.shape[1] ** 0.5)
    return torch.cat(nearest)
