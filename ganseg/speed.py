"""Whether bf16 autocast and the channels_last memory format pay off on this machine's CPU.

Both are offered for GPUs, where they usually help; on a CPU they can cost a great deal (torch
emulates bf16 on CPUs without native bf16 instructions: about 10x slower). The train stage asks
`slower_options` before it starts and warns about each option that a short probe finds slower.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ganseg.config import TrainConfig

SLOWER = 1.1  # a probed slowdown above this is worth a warning
PROBE_BATCH = (8, 1, 64, 64)  # the default training batch


def probe_network() -> nn.Module:
    """A small conv stack like the segmenter's encoder: enough convolutions to show what a format costs."""
    layers, channels = [], 1
    for width in (16, 32, 64):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(),
                   nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.Conv2d(channels, 3, 1))


def seconds_per_step(precision: str = "fp32", channels_last: bool = False, steps: int = 4, windows: int = 3) -> float:
    """Seconds per forward + backward pass of the probe network on the CPU (best of `windows`)."""
    torch.manual_seed(0)
    network, x = probe_network(), torch.randn(PROBE_BATCH)
    if channels_last:
        network, x = network.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = network(x).float().square().mean()
        loss.backward()

    step()  # warm-up: oneDNN picks its kernels
    best = float("inf")
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def probe_slowdowns(cfg: TrainConfig) -> dict[str, float]:
    """Slowdown against plain fp32 (above 1 = slower) of each CPU speed option `cfg` turns on."""
    asked = {"bf16": cfg.precision == "bf16", "channels_last": cfg.channels_last}
    if not any(asked.values()):
        return {}
    fp32 = seconds_per_step()
    slowdowns = {}
    if asked["bf16"]:
        slowdowns["bf16"] = seconds_per_step(precision="bf16") / fp32
    if asked["channels_last"]:
        slowdowns["channels_last"] = seconds_per_step(channels_last=True) / fp32
    return slowdowns


def slower_options(cfg: TrainConfig, use_gpu: bool) -> list[str]:
    """A warning for each of train.precision bf16 and train.channels_last that runs slower than fp32
    on this CPU, with the probed slowdown and what to use instead; none for GPU workers."""
    if use_gpu:
        return []
    advice = {
        "bf16": ("train.precision bf16", "use train.precision: fp32",
                 "" if torch.cpu._is_avx512_bf16_supported() else "; this CPU has no native bf16, torch emulates it"),
        "channels_last": ("train.channels_last", "set train.channels_last: false", ""),
    }
    warnings = []
    for option, slowdown in probe_slowdowns(cfg).items():
        if slowdown > SLOWER:
            name, instead, why = advice[option]
            warnings.append(f"{name} runs {slowdown:.1f}x slower than fp32 on this CPU (probed on a small conv"
                            f" stack{why}): {instead}")
    return warnings
