"""The configurations `ganseg bench quality` trains and compares, and `--contender NAME=key=value,...`.

Every configuration is params plus dotted-key overrides, and is compared seed by seed with a
reference: the supervised baseline, or, on a label fraction, supervised training on the same labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ganseg.config import Params, validate_params
from ganseg.dotted import parse_override, set_dotted
from ganseg.errors import ParamsError

BASELINE = "supervised baseline"
SUPERVISED = {"train.lambda_adv": 0.0}
# a comma starts a new override only where a dotted key and '=' follow: values may hold commas ([a, b])
_NEXT_OVERRIDE = re.compile(r",(?=\s*[A-Za-z_][\w.]*\s*=)")


@dataclass(frozen=True)
class Contender:
    name: str
    overrides: dict[str, Any]
    reference: str | None = None  # the configuration it is compared with, seed by seed; None for the baseline
    steps: int | None = None  # its training budget when the bench runs several (`at_budgets`)


def parse_contender(text: str) -> tuple[str, dict[str, Any]]:
    """'lsgan=train.adv_loss=lsgan,train.lambda_adv=0.01' -> ('lsgan', {'train.adv_loss': 'lsgan',
    'train.lambda_adv': 0.01}); values are read as YAML, as by --set. 'NAME=' is params as they are."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ParamsError(f"--contender expects NAME=key=value,key=value (or NAME= for params as given), got {text!r}")
    overrides: dict[str, Any] = {}
    for item in _NEXT_OVERRIDE.split(rest) if rest.strip() else []:
        try:
            key, value = parse_override(item)
        except ParamsError:
            raise ParamsError(f"--contender {name}: expected key=value, got {item.strip()!r}") from None
        overrides[key] = value
    return name, overrides


def contenders(label_fraction: float | None = None, variants: list[tuple[str, dict]] | None = None,
               baseline_only: bool = False) -> list[Contender]:
    """The supervised baseline (lambda_adv = 0) and the GAN segmenter as params say, or instead of the
    latter the named `variants`; with a label fraction, supervised training on that share of the
    training images and each GAN row on it with the rest of the images unlabelled (semi-supervised).
    With `baseline_only`, the baseline alone: a recipe's scores, compared with nothing."""
    if baseline_only:
        if variants or label_fraction is not None:
            raise ParamsError("--baseline-only trains the baseline alone: leave out --contender and --label-fraction")
        return [Contender(BASELINE, SUPERVISED)]
    gans = variants if variants else [("GAN segmenter", {})]
    rows = [Contender(BASELINE, SUPERVISED)] + [Contender(name, overrides, BASELINE) for name, overrides in gans]
    if label_fraction is not None:
        share = f"{label_fraction:.0%} labels"
        fraction = {"train.semi.label_fraction": label_fraction}
        supervised = f"supervised, {share}"
        rows.append(Contender(supervised, SUPERVISED | fraction, BASELINE))
        rows += [
            Contender(f"{'semi-supervised' if not variants else name}, {share}", overrides | fraction, supervised)
            for name, overrides in gans
        ]
    names = [row.name for row in rows]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ParamsError(f"--contender: names must differ from each other and from the built-in rows: {repeated}")
    return rows


def check_contenders(params: Params, rows: list[Contender]) -> None:
    """Refuse, before any training, a contender whose overrides do not make valid params."""
    for row in rows:
        raw = params.model_dump()
        for key, value in row.overrides.items():
            set_dotted(raw, key, value)
        validate_params(raw, source=f"--contender {row.name}")


def at_budgets(rows: list[Contender], budgets: list[int]) -> list[Contender]:
    """Every row once per budget, named 'NAME @ STEPS' and compared with its reference at the same budget."""
    return [
        Contender(f"{row.name} @ {steps}", row.overrides, row.reference and f"{row.reference} @ {steps}", steps)
        for steps in budgets for row in rows
    ]
