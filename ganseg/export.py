"""The exported model folder: the generator's weights beside its card (ganseg/contracts.py), all
that evaluate and predict need to rebuild and use it; nothing in it is pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
    model_dir = Path(model_dir)
    card_path = model_dir / MODEL_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a ganseg model folder (no {MODEL_CARD})")
    card = read_model_card(card_path)
    generator = build_generator(card.model, card.in_channels, card.num_classes)
    weights_path = model_dir / MODEL_WEIGHTS
    weights = load_weights_file(weights_path)
    try:
        load_matching(generator, weights, weights_path, "generator")
    except CheckpointError as err:
        raise CheckpointError(f"{err}\n  ({card_path} describes {card.describe_network()})") from None
    return generator.eval(), card
