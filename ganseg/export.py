"""The exported model folder: the generator's weights beside its card (ganseg/contracts.py), all
that evaluate and predict need to rebuild and use it; nothing in it is pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganseg.checkpoints import load_matching, load_weights_file
from ganseg.contracts import MODEL_CARD, ModelCard, read_model_card, write_model_card
from ganseg.errors import CheckpointError
from ganseg.segmenter.networks import UNet, build_generator

MODEL_WEIGHTS = "generator.pt"


def export_model(out_dir: Path, weights: dict, card: ModelCard) -> None:
    """Write a self-describing model folder: the generator's weights and the card to rebuild and use it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / MODEL_WEIGHTS)
    write_model_card(out_dir, card)


def load_model(model_dir: str | Path) -> tuple[UNet, ModelCard]:
    """The generator of an exported model folder; CheckpointError if its files do not fit together."""
    card_path = card_in(model_dir, MODEL_CARD, "model")
    card = read_model_card(card_path)
    generator = build_generator(card.model, card.in_channels, card.num_classes)
    weights = Path(model_dir) / MODEL_WEIGHTS
    return load_exported(generator, weights, card_path, card.describe_network(), "generator"), card


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
