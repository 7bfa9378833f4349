"""An exported model folder, for either GAN: the trained network's weights beside its card (a
contract of ganseg/contracts.py); nothing in it is pickled code."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganseg.checkpoints import load_matching, load_weights_file
from ganseg.errors import CheckpointError


def save_weights(out_dir: Path, weights_file: str, weights: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / weights_file)


def card_in(model_dir: str | Path, card_name: str, kind: str) -> Path:
    """The card file of an exported folder; FileNotFoundError naming what the folder is not."""
    path = Path(model_dir) / card_name
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a ganseg {kind} folder (no {card_name})")
    return path


def load_exported(network: nn.Module, weights_path: Path, card_path: Path, described: str, what: str) -> nn.Module:
    """`network`, built as its card says, with the folder's weights, in eval mode; a CheckpointError
    that also says what the card describes when they do not fit."""
    try:
        load_matching(network, load_weights_file(weights_path), weights_path, what)
    except CheckpointError as err:
        raise CheckpointError(f"{err}\n  ({card_path} describes {described})") from None
    return network.eval()
