"""Where inference runs (evaluate, predict, generate, a served model): the first GPU when there is
one, else the CPU. `ganseg --cpu`, or GANSEG_CPU=1 in the environment (for a served model, a Ray
worker or `dvc repro`), keeps it on the CPU. Training chooses its devices with train.use_gpu."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FORCE_CPU = "GANSEG_CPU"


def cpu_forced() -> bool:
    return os.environ.get(FORCE_CPU, "").strip().lower() in ("1", "true", "yes")


def inference_device() -> torch.device:
    import torch  # here: the CLI reads FORCE_CPU from this module, and stages such as prepare need no torch

    return torch.device("cuda" if torch.cuda.is_available() and not cpu_forced() else "cpu")
