"""prepare stage: the built-in synthetic default or a user's folder -> data/prepared."""

from __future__ import annotations

import sys
from pathlib import Path

from ganseg.config import Params
from ganseg.contracts import DatasetStats
from ganseg.data.prepare import SKIPPED_REPORT, prepare_dataset


def run(params: Params, project_root: Path) -> DatasetStats:
    out_dir = project_root / params.data.output_dir
    stats = prepare_dataset(params.data, params.seed, out_dir)
    counts = ", ".join(f"{k} {v}" for k, v in stats.counts.items())
    shares = ", ".join(f"{n} {f:.1%}" for n, f in zip(stats.class_names, stats.train_frequency))
    void = stats.void_fraction
    void_note = f" (of the annotated ones; void: {void['train']:.1%}, in no loss or metric)" if void else ""
    print(f"prepared {out_dir}: {counts} tiles of {stats.image_size}px; train pixels: {shares}{void_note}")
    _report_intensity(stats)
    if stats.skipped_files:
        print(f"skipped {stats.skipped_files} unusable file(s) (data.on_error: skip): see {out_dir / SKIPPED_REPORT}")
    return stats


def _report_intensity(stats: DatasetStats) -> None:
    rule = stats.intensity
    print(f"image values mapped to 0..255 by {rule.describe()} (data.intensity)")
    clipped = stats.clipped_share
    if clipped and rule.mode in ("dtype", "fixed"):
        print(f"warning: {clipped:.2%} of the image values fell outside that range and were clipped;"
              " data.intensity.mode: image_percentiles (or a wider fixed range) keeps them", file=sys.stderr)
