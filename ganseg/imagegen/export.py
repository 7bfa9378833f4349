"""The exported image generator: its weights beside its card (imagegen.json); nothing pickled."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ganseg.contracts import IMAGEGEN_CARD, ImagegenCard, read_imagegen_card, write_imagegen_card
from ganseg.export import card_in, load_exported
from ganseg.imagegen.training import build_generator

IMAGEGEN_WEIGHTS = "image_generator.pt"


def export_image_generator(out_dir: Path, weights: dict, card: ImagegenCard) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out_dir / IMAGEGEN_WEIGHTS)
    write_imagegen_card(out_dir, card)


@torch.no_grad()
def without_parametrizations(generator: nn.Module, card: ImagegenCard) -> nn.Module:
    """The same generator with plain weights where it has spectral-norm parametrizations: the same
    images in eval mode, and a module that can be pickled (MLflow's pytorch flavour pickles it)."""
    generator.eval()  # spectral norm's power iteration runs only in training mode
    effective = {}
    for name, module in generator.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name in module.parametrizations:
                effective[f"{name}.{tensor_name}" if name else tensor_name] = getattr(module, tensor_name).clone()
    rest = {key: value for key, value in generator.state_dict().items() if ".parametrizations." not in key}
    plain = build_generator(card.imagegen.model_copy(update={"spectral_norm": False}), card.num_classes, card.channels)
    plain.load_state_dict(rest | effective)
    return plain.eval()


def load_image_generator(model_dir: str | Path) -> tuple[nn.Module, ImagegenCard]:
    """The generator of an exported folder, in eval mode; CheckpointError if its files do not fit together."""
    card_path = card_in(model_dir, IMAGEGEN_CARD, "image generator")
    card = read_imagegen_card(card_path)
    generator = build_generator(card.imagegen, card.num_classes, card.channels)
    described = f"a {card.imagegen.generator} generator"
    return load_exported(generator, Path(model_dir) / IMAGEGEN_WEIGHTS, card_path, described, "image generator"), card
