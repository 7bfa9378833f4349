"""prepare stage: the built-in synthetic default or a user's folder -> data/prepared."""

from __future__ import annotations

import sys
from pathlib import Path

from ganseg.config import Params
from ganseg.data import SKIPPED_REPORT, prepare_dataset
from ganseg.intensity import IntensityRule


def run(params: Params, project_root: Path) -> dict:
    out_dir = project_root / params.data.output_dir
    stats = prepare_dataset(params.data, params.seed, out_dir)
    counts = ", ".join(f"{k} {v}" for k, v in stats["counts"].items())
    shares = ", ".join(f"{n} {f:.1%}" for n, f in zip(stats["class_names"], stats["class_frequency"]["train"]))
    void = stats.get("void_fraction")
    void_note = f" (of the annotated ones; void: {void['train']:.1%}, in no loss or metric)" if void else ""
    print(f"prepared {out_dir}: {counts} tiles of {stats['image_size']}px; train pixels: {shares}{void_note}")
    _report_intensity(stats)
    if stats["skipped_files"]:
        skipped = stats["skipped_files"]
        print(f"skipped {skipped} unusable file(s) (data.on_error: skip): see {out_dir / SKIPPED_REPORT}")
    return stats


def _report_intensity(stats: dict) -> None:
    rule = IntensityRule.from_dict(stats["intensity"])
    print(f"image values mapped to 0..255 by {rule.describe()} (data.intensity)")
    clipped = stats["clipped_share"]
    if clipped and rule.mode in ("dtype", "fixed"):
        print(f"warning: {clipped:.2%} of the image values fell outside that range and were clipped;"
              " data.intensity.mode: image_percentiles (or a wider fixed range) keeps them", file=sys.stderr)
