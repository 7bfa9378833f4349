"""synthesize stage: the built-in dataset (ganseg/data/synthetic.py) as the folder data/synthetic,
which the default data.source names, so that prepare reads it as it reads a user's folder."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from ganseg.data.synthetic import write_synthetic_dataset
from pipeline.console import closing

SYNTHETIC_DIR = Path("data/synthetic")


def run(params: Params, project_root: Path) -> Path:
    folder = write_synthetic_dataset(params.data.synthetic, params.seed, project_root / SYNTHETIC_DIR)
    cfg = params.data.synthetic
    closing(f"wrote {cfg.num_images} image/mask pairs of {cfg.size} px to {SYNTHETIC_DIR} (seed {params.seed})")
    return folder
