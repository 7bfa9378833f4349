"""prepare stage: the built-in synthetic default or a user's folder -> data/prepared."""

from __future__ import annotations

from pathlib import Path

from ganseg.config import Params
from ganseg.data import SKIPPED_REPORT, prepare_dataset


def run(params: Params, project_root: Path) -> dict:
    out_dir = project_root / params.data.output_dir
    stats = prepare_dataset(params.data, params.seed, out_dir)
    counts = ", ".join(f"{k} {v}" for k, v in stats["counts"].items())
    shares = ", ".join(f"{n} {f:.1%}" for n, f in zip(stats["class_names"], stats["class_frequency"]["train"]))
    void = stats.get("void_fraction")
    void_note = f" (of the annotated ones; void: {void['train']:.1%}, in no loss or metric)" if void else ""
    print(f"prepared {out_dir}: {counts} tiles of {stats['image_size']}px; train pixels: {shares}{void_note}")
    if stats["skipped_files"]:
        skipped = stats["skipped_files"]
        print(f"skipped {skipped} unusable file(s) (data.on_error: skip): see {out_dir / SKIPPED_REPORT}")
    return stats
