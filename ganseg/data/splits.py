"""Which split each image belongs to: a stable hash of its file stem, or the user's split file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ganseg.config import DataConfig, SplitConfig
from ganseg.errors import DataError

SPLITS = ("train", "val", "test")
SHOWN = 8  # stems named in an error message, at most


def split_of(stem: str, split: SplitConfig) -> str:
    """Stable split from a hash of the stem: adding files never moves existing ones."""
    digest = hashlib.sha1(stem.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < split.train:
        return "train"
    return "val" if position < split.train + split.val else "test"


def assign_splits(
    stems: list[str], cfg: DataConfig, seed: int, present: set[str] | None = None, root: Path = Path(".")
) -> dict[str, str]:
    """stem -> train / val / test for every stem to prepare.

    With data.split_file the file decides; `present` (every stem found in images/, usable or not)
    lets it tell a stem with a problem file from a stem that is not in the folder at all. A relative
    split file is read from `root`.
    """
    if cfg.split_file is None:
        return {stem: split_of(stem, cfg.split) for stem in stems}
    listed = read_split_file(split_file_path(cfg, root), cfg.split_file)
    _check_coverage(cfg.split_file, listed, set(stems), present if present is not None else set(stems))
    assigned = {stem: listed[stem] for stem in stems}
    if "val" not in listed.values():
        assigned |= _validation_share(assigned, cfg.split.val, seed)
    return assigned


def split_file_path(cfg: DataConfig, root: Path = Path(".")) -> Path:
    """Where data.split_file points (it must be set); a relative one is read from `root`."""
    return root / Path(cfg.split_file).expanduser()


def read_split_file(path: Path, shown: str | None = None) -> dict[str, str]:
    """The stem -> split map of a CSV with the columns stem,split; DataError for anything else, naming
    the file as `shown` (the path as the params give it) or `path`."""
    shown = shown or str(path)
    if not path.is_file():
        raise DataError(f"data.split_file {shown}: no such file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"data.split_file {shown}: not a readable CSV ({err})") from None
    if list(table.columns[:2]) != ["stem", "split"]:
        raise DataError(f"data.split_file {shown}: needs the header stem,split (found {','.join(table.columns)})")
    table["stem"], table["split"] = table["stem"].str.strip(), table["split"].str.strip()
    bad = table[~table["split"].isin(SPLITS)]
    if len(bad):
        rows = ", ".join(f"line {i + 2}: {s!r}" for i, s in bad["split"].head(SHOWN).items())
        raise DataError(f"data.split_file {shown}: split must be train, val or test ({rows})")
    twice = table["stem"][table["stem"].duplicated()].unique()
    if len(twice):
        raise DataError(f"data.split_file {shown}: stems listed more than once: {_names(twice)}")
    for needed in ("train", "test"):
        if needed not in set(table["split"]):
            raise DataError(f"data.split_file {shown}: no {needed!r} rows: the {needed} split would be empty")
    return dict(zip(table["stem"], table["split"]))


def _check_coverage(path: str, listed: dict[str, str], stems: set[str], present: set[str]) -> None:
    unknown = sorted(set(listed) - present)
    if unknown:
        raise DataError(f"data.split_file {path}: {len(unknown)} stem(s) have no image in images/: {_names(unknown)}")
    unlisted = sorted(stems - set(listed))
    if unlisted:
        raise DataError(
            f"data.split_file {path} does not list {len(unlisted)} image(s): {_names(unlisted)}"
            " (add a row per image, or remove the images from the folder)"
        )


def _validation_share(assigned: dict[str, str], share: float, seed: int) -> dict[str, str]:
    """A seeded `share` of the train stems (at least one, never all) moved to val."""
    train = sorted(stem for stem, split in assigned.items() if split == "train")
    count = min(max(1, round(share * len(train))), len(train) - 1)
    order = np.random.default_rng(seed).permutation(len(train))
    return {train[i]: "val" for i in order[:count]}


def _names(stems) -> str:
    stems = list(stems)
    more = f" and {len(stems) - SHOWN} more" if len(stems) > SHOWN else ""
    return ", ".join(stems[:SHOWN]) + more
