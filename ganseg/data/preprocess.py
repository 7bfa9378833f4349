"""After the intensity rule, `data.preprocess` can change what the network sees, in prepare, predict
and the served model alike (all three read images through `sources.read_model_input`):

- `grey: green`: a colour image read as one channel (data.channels: 1) is its green channel instead
  of its luminance; in retinal fundus photographs the vessels contrast best in green;
- `clahe_clip > 0`: contrast-limited adaptive histogram equalisation, kornia's, each channel on its
  own, over clahe_grid x clahe_grid tiles of the image (fewer for an image of clahe_grid pixels or
  less a side; none for a single row or column). It is computed on the whole image, before tiling or
  resizing, so a tile of a prepared image and the same place of a predicted one agree.

The settings travel in stats.json and the model card (ganseg/contracts.py) as `preprocess`, left out
when they change nothing.
"""

from __future__ import annotations

import numpy as np

from ganseg.config import PreprocessConfig


def equalised(image: np.ndarray, preprocess: PreprocessConfig | None) -> np.ndarray:
    """(H, W, C) uint8, with CLAHE applied when `preprocess` asks for it."""
    tiles = min(preprocess.clahe_grid, min(image.shape[:2]) - 1) if preprocess else 0
    if preprocess is None or preprocess.clahe_clip == 0 or tiles < 1:
        return image
    import torch
    from kornia.enhance import equalize_clahe

    unit = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
    result = equalize_clahe(unit, clip_limit=preprocess.clahe_clip, grid_size=(tiles, tiles))
    return result.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def describe(preprocess: PreprocessConfig | None) -> str:
    """'' when nothing is done, else what is, e.g. 'the green channel, then CLAHE (clip 2, 8x8 tiles)'."""
    if preprocess is None:
        return ""
    steps = ["the green channel"] if preprocess.grey == "green" else []
    if preprocess.clahe_clip:
        grid = preprocess.clahe_grid
        steps.append(f"CLAHE (clip {preprocess.clahe_clip:g}, {grid}x{grid} tiles)")
    return ", then ".join(steps)


def stored(preprocess: PreprocessConfig) -> PreprocessConfig | None:
    """What stats.json records: nothing for the settings that change nothing."""
    return None if preprocess.is_identity else preprocess
