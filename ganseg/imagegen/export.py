"""The exported image generator: its weights beside its card (imagegen.json); nothing pickled."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

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


@torch.no_grad()
def without_parametrizations(generator: nn.Module) -> nn.Module:
    """A copy of the generator, in eval mode, whose parametrized weights (spectral norm) are plain
    weights holding their eval-mode values: the same images in eval mode, and a module that can be
    pickled (MLflow's pytorch flavour pickles it). The given generator is left as it is."""
    plain = copy.deepcopy(generator).eval()  # eval: spectral norm's power iteration runs only in training mode
    for module in [module for module in plain.modules() if parametrize.is_parametrized(module)]:
        # A deep copy shares its parametrized class with the original, and removing a parametrization
        # deletes the tensor's property from that class: the copy gets a class of its own first.
        shared = type(module)
        module.__class__ = type(shared.__name__, shared.__bases__, dict(shared.__dict__))
        for tensor_name in list(module.parametrizations):
            parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return plain


def load_image_generator(model_dir: str | Path) -> tuple[nn.Module, ImagegenCard]:
    """The generator of an exported folder, in eval mode; CheckpointError if its files do not fit together."""
    card_path = card_in(model_dir, IMAGEGEN_CARD, "image generator")
    card = read_imagegen_card(card_path)
    generator = build_generator(card.imagegen, card.num_classes, card.channels)
    described = f"a {card.imagegen.generator} generator"
    return load_exported(generator, Path(model_dir) / IMAGEGEN_WEIGHTS, card_path, described, "image generator"), card
