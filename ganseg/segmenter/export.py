"""The exported segmenter folder: its weights beside its card (model.json), all that evaluate and
predict need to rebuild and use it."""

from __future__ import annotations

from pathlib import Path

from ganseg.contracts import MODEL_CARD, ModelCard, read_model_card, write_model_card
from ganseg.gan.export import card_in, load_exported, save_weights
from ganseg.gan.networks import UNet
from ganseg.segmenter.networks import build_segmenter

MODEL_WEIGHTS = "segmenter.pt"
OLD_MODEL_WEIGHTS = "generator.pt"  # the name in model folders written before the segmenter was called so


def export_model(out_dir: Path, weights: dict, card: ModelCard) -> None:
    """Write a self-describing model folder: the segmenter's weights and the card to rebuild and use it."""
    save_weights(out_dir, MODEL_WEIGHTS, weights)
    write_model_card(out_dir, card)


def load_model(model_dir: str | Path) -> tuple[UNet, ModelCard]:
    """The segmenter of an exported model folder; CheckpointError if its files do not fit together."""
    card_path = card_in(model_dir, MODEL_CARD, "model")
    card = read_model_card(card_path)
    segmenter = build_segmenter(card.model, card.in_channels, card.num_classes)
    return load_exported(segmenter, weights_path(model_dir), card_path, card.describe_network(), "segmenter"), card


def weights_path(model_dir: str | Path) -> Path:
    """The weights file of a model folder: segmenter.pt, or generator.pt in a folder of older code."""
    path = Path(model_dir) / MODEL_WEIGHTS
    old = Path(model_dir) / OLD_MODEL_WEIGHTS
    return old if not path.is_file() and old.is_file() else path
