"""Checkpoints of a GAN's training state, and the weights files behind every model.

A checkpoint holds all that training needs to go on exactly where it stopped: both networks,
optimisers (and schedulers and grad scaler, where the state has them), the moving average of the
trained network, epoch, step, history and the RNG states. It serves any state that is a `GanState`. Every file is loaded with `torch.load(weights_only=True)`, so none can run code, and
weights for another architecture are refused with the tensors that differ.
"""

from __future__ import annotations

import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ganseg.errors import CheckpointError


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state_dict: dict) -> Any: ...


class GanState(Protocol):
    """What a GAN's training state holds, as checkpoints see it: the network trained against the
    discriminator (`model`, saved under `model_key`: "segmenter" or "generator"), the
    discriminator, the optimisation state (optimisers, and schedulers and grad scaler where there
    are any, by name), the step count and the moving average of `model`."""

    model_key: str
    discriminator: nn.Module
    global_step: int
    ema: AveragedModel | None

    @property
    def model(self) -> nn.Module: ...

    def optimisation(self) -> dict[str, Stateful]: ...


# Checkpoints of older code call the segmenter the generator (per trained network: new key -> old key).
OLD_KEYS = {"segmenter": {"segmenter": "generator", "ema_segmenter": "ema_generator"}}
# ... and name the layers of the image generator's PatchGANs by stage ("stages.1.0." is now "net.2.").
_OLD_PATCHGAN_LAYER = re.compile(r"\.stages\.(\d+)\.(?:0\.)?")


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def checkpoint_of(state: GanState, epoch: int, history: list[dict]) -> dict:
    """Everything needed to continue exactly where training stopped."""
    return {
        state.model_key: unwrap(state.model).state_dict(),
        "discriminator": unwrap(state.discriminator).state_dict(),
        **{name: part.state_dict() for name, part in state.optimisation().items()},
        "epoch": epoch,
        "global_step": state.global_step,
        "rng": rng_state(),
        "history": history,
        **_ema_weights(state),
    }


def _ema_weights(state: GanState) -> dict:
    if state.ema is None:
        return {}
    return {f"ema_{state.model_key}": state.ema.module.state_dict(), "ema_updates": state.ema.n_averaged.clone()}


def weights_to_export(checkpoint: dict, model_key: str) -> dict:
    """The weights of the trained network to export from a checkpoint: its moving average when there is one."""
    return checkpoint.get(f"ema_{model_key}", checkpoint[model_key])


CHECKPOINT_KEYS = ("discriminator", "opt_g", "opt_d", "epoch", "global_step", "rng", "history")


def read_checkpoint(path: Path, model_key: str) -> dict:
    """A checkpoint saved from `checkpoint_of` of a state whose trained network is `model_key`;
    CheckpointError if it is not one."""
    checkpoint = load_weights_file(path)
    if isinstance(checkpoint, dict):
        _rename_old_keys(checkpoint, model_key)
    required = (model_key, *CHECKPOINT_KEYS)
    missing = [key for key in required if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not a ganseg training checkpoint (no {', '.join(missing)})")
    return checkpoint


def _rename_old_keys(checkpoint: dict, model_key: str) -> None:
    """A checkpoint of older code, in place, as this code names its entries and tensors."""
    for key, old in OLD_KEYS.get(model_key, {}).items():
        if key not in checkpoint and old in checkpoint:
            checkpoint[key] = checkpoint.pop(old)
    discriminator = checkpoint.get("discriminator")
    if isinstance(discriminator, dict) and any(".stages." in name for name in discriminator):
        checkpoint["discriminator"] = {
            _OLD_PATCHGAN_LAYER.sub(lambda m: f".net.{2 * int(m.group(1))}.", name): tensor
            for name, tensor in discriminator.items()
        }


def load_networks(state: GanState, checkpoint: dict, path: Path) -> None:
    """Both networks' weights from a checkpoint into `state`; CheckpointError naming the file if they do not fit."""
    load_matching(unwrap(state.model), checkpoint[state.model_key], path, state.model_key)
    load_matching(unwrap(state.discriminator), checkpoint["discriminator"], path, "discriminator")


def restore_checkpoint(state: GanState, path: Path, checkpoint: dict | None = None) -> dict:
    """Put a checkpoint saved from `checkpoint_of` into `state` and the RNGs; CheckpointError if it is
    not one for these networks. Returns the checkpoint (epoch, history). `checkpoint`, when given, is
    the file at `path` already read with `read_checkpoint`."""
    checkpoint = checkpoint if checkpoint is not None else read_checkpoint(path, state.model_key)
    load_networks(state, checkpoint, path)
    for name, part in state.optimisation().items():
        try:
            part.load_state_dict(checkpoint[name])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: the {name} state does not fit these networks ({err})") from None
    if state.ema is not None:
        ema_key = f"ema_{state.model_key}"
        if ema_key not in checkpoint:
            raise CheckpointError(f"{path}: has no moving average of the {state.model_key}, but ema_decay is on")
        load_matching(state.ema.module, checkpoint[ema_key], path, ema_key)
        state.ema.n_averaged.copy_(checkpoint["ema_updates"])
    state.global_step = checkpoint["global_step"]
    set_rng_state(checkpoint["rng"])
    return checkpoint


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2])},
    }


def set_rng_state(saved: dict) -> None:
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["python"])
    keys = saved["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, saved["numpy"]["pos"], 0, 0.0))


def load_weights_file(path: Path) -> Any:
    """torch.load limited to tensors and plain containers (weights_only): a file can never run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if _python_objects_in(path):  # references to Python code, which only a full unpickler would run
            reason = f"refused: it holds Python objects, not just weights ({detail})"
        else:
            reason = f"not a readable PyTorch weights file ({detail})"
    except Exception as err:  # on arbitrary bytes torch.load fails in many ways (even KeyError)
        reason = f"not a readable PyTorch weights file ({type(err).__name__}: {_first_line(err)})"
    raise CheckpointError(f"{path}: {reason}")


def _python_objects_in(path: Path) -> list[str]:
    """The functions and classes a torch.save file refers to beyond plain weights (read, never run)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:  # not a file torch.save wrote
        return []


def _unpickler_detail(err: Exception) -> str:
    """The specific line of torch's weights-only refusal, without its generic advice."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(err).splitlines()]
    specific = [line for line in lines if line and not line.startswith(boilerplate)]
    return specific[0] if specific else _first_line(err)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def load_matching(module: nn.Module, weights: Any, path: Path, what: str) -> None:
    """load_state_dict, or a CheckpointError naming the file and how its tensors differ from `module`'s."""
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: the {what} entry is not a state dict of tensors")
    differences = state_dict_differences(module.state_dict(), weights)
    if differences:
        raise CheckpointError(
            f"{path}: the {what} weights are for another architecture: {'; '.join(differences)}"
        )
    module.load_state_dict(weights)


def state_dict_differences(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and reshaped tensors, with examples; empty when `found` fits."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    differences = [
        f"{len(keys)} {label} tensor(s) ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        for label, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    if reshaped:
        first = reshaped[0]
        differences.append(
            f"{len(reshaped)} tensor(s) of another shape (e.g. {first}: {tuple(found[first].shape)} in the file,"
            f" {tuple(expected[first].shape)} in the model)"
        )
    return differences
