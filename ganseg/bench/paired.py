"""Paired comparisons for `ganseg bench quality`: a contender against its reference, seed by seed.

Both are trained on the same seed (the same initial generator, the same order of batches), so
the per-seed difference removes most of the seed-to-seed spread; its mean gets a 95 % confidence
interval by Student's t with n - 1 degrees of freedom.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import stats


def paired_difference(values: list[float], reference: list[float], confidence: float = 0.95) -> dict:
    """Per-pair differences values[i] - reference[i], their mean, and the t confidence interval of the
    mean (low, high: None for a single pair). Verdict: 'better' when the interval lies above 0,
    'worse' when below, 'tie' when it holds 0, 'n/a' without an interval."""
    if len(values) != len(reference):
        raise ValueError(f"paired values need one reference each: {len(values)} against {len(reference)}")
    differences = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    n = differences.size
    mean = float(differences.mean()) if n else None
    low = high = None
    if n >= 2:
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n)
        low, high = mean - float(half), mean + float(half)
    if low is None:
        verdict = "n/a"
    else:
        verdict = "better" if low > 0 else "worse" if high < 0 else "tie"
    return {"differences": differences.tolist(), "n": n, "mean": mean, "low": low, "high": high, "verdict": verdict}


def paired_comparisons(
    runs: list[dict], references: dict[str, str], metrics: dict[str, Callable[[dict], float | None]]
) -> list[dict]:
    """For each configuration with a reference and each metric (a label and how to read it from a run):
    the paired difference over the seeds on which both have a value."""
    by_config: dict[str, dict[int, dict]] = {}
    for run in runs:
        by_config.setdefault(run["config"], {})[run["seed"]] = run
    rows = []
    for name, reference in references.items():
        mine, theirs = by_config.get(name, {}), by_config.get(reference, {})
        for label, read in metrics.items():
            pairs = [(seed, read(mine[seed]), read(theirs[seed])) for seed in mine if seed in theirs]
            pairs = [(seed, a, b) for seed, a, b in pairs if _number(a) and _number(b)]
            result = paired_difference([a for _, a, _ in pairs], [b for _, _, b in pairs])
            rows.append({"config": name, "reference": reference, "metric": label,
                         "seeds": [seed for seed, _, _ in pairs]} | result)
    return rows


def _number(value) -> bool:
    return value is not None and not math.isnan(value)
