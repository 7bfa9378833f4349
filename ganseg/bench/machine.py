"""The machine a bench ran on, in words, for every bench's report."""

from __future__ import annotations

import os
import platform

import torch


def machine() -> str:
    """Architecture, cores, torch threads, the widest vector unit torch uses, native bf16, and the GPU if any."""
    bf16 = "native bf16" if torch.cpu._is_avx512_bf16_supported() else "no native bf16"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads,"
            f" {torch.backends.cpu.get_cpu_capability()}, {bf16}, {gpu}")
