"""The exported image generator: its weights beside its card (imagegen.json); nothing pickled."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ganseg.contracts import (
    IMAGEGEN_CARD,
    ImagegenCard,
    read_imagegen_card,
    write_imagegen_card,
)
from ganseg.gan.export import card_in, load_exported, save_weights
from ganseg.imagegen.training import build_generator

IMAGEGEN_WEIGHTS = "image_generator.pt"


def export_image_generator(out_dir: Path, weights: dict, card: ImagegenCard) -> None:
    save_weights(out_dir, IMAGEGEN_WEIGHTS, weights)
    write_imagegen_card(out_dir, card)


def load_image_generator(model_dir: str | Path) -> tuple[nn.Module, ImagegenCard]:
    """The generator of an exported folder, in eval mode; CheckpointError if its files do not fit together."""
    card_path = card_in(model_dir, IMAGEGEN_CARD, "image generator")
    card = read_imagegen_card(card_path)
    generator = build_generator(card.imagegen, card.num_classes, card.channels)
    described = f"a {card.imagegen.generator} generator"
    return load_exported(generator, Path(model_dir) / IMAGEGEN_WEIGHTS, card_path, described, "image generator"), card
