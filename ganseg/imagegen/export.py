"""The exported image generator: its weights beside its card (imagegen.json); nothing pickled."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganseg.checkpoints import load_matching, load_weights_file
from ganseg.contracts import IMAGEGEN_CARD, ImagegenCard, read_imagegen_card, write_imagegen_card
from ganseg.errors import CheckpointError
from ganseg.imagegen.training import build_generator

IMAGEGEN_WEIGHTS = "image_generator.pt"


def export_image_generator(out_dir: Path, weights: dict, card: ImagegenCard) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / IMAGEGEN_WEIGHTS)
    write_imagegen_card(out_dir, card)


def load_image_generator(model_dir: str | Path) -> tuple[nn.Module, ImagegenCard]:
    """The generator of an exported folder, in eval mode; CheckpointError if its files do not fit together."""
    model_dir = Path(model_dir)
    card_path = model_dir / IMAGEGEN_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a ganseg image generator folder (no {IMAGEGEN_CARD})")
    card = read_imagegen_card(card_path)
    generator = build_generator(card.imagegen, card.num_classes, card.channels)
    weights_path = model_dir / IMAGEGEN_WEIGHTS
    try:
        load_matching(generator, load_weights_file(weights_path), weights_path, "image generator")
    except CheckpointError as err:
        raise CheckpointError(f"{err}\n  ({card_path} describes a {card.imagegen.generator} generator)") from None
    return generator.eval(), card
