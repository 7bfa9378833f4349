"""Pictures: mask overlays, the confusion matrix and per-class bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ganseg.data.void import VOID

_COLOURS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]],
    np.uint8,
)
VOID_GREY = (128, 128, 128)  # void pixels, drawn solid so that they read as "not annotated", not as a class


def class_colours(num_classes: int) -> np.ndarray:
    reps = -(-num_classes // len(_COLOURS))
    return np.tile(_COLOURS, (reps, 1))[:num_classes]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the image with every non-background class tinted by its colour; void pixels grey."""
    rgb = image.repeat(3, axis=2) if image.shape[2] == 1 else image
    void = mask == VOID
    ids = np.where(void, 0, mask)
    colours = class_colours(int(ids.max()) + 1)[ids]
    tinted = (1 - alpha) * rgb + alpha * colours
    out = np.where((ids > 0)[..., None], tinted, rgb).astype(np.uint8)
    out[void] = VOID_GREY
    return out


def strip_scale(height: int) -> int:
    """Small images are enlarged (up to 3x, nearest neighbour) so their pixels can be seen; large ones are not."""
    return min(3, max(1, 256 // height))


def comparison_strip(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, scale: int | None = None) -> Image.Image:
    """image | truth overlay | prediction overlay, side by side, small images enlarged for viewing.

    Void pixels of the truth are grey; the prediction panel shows what the model predicts everywhere.
    """
    scale = strip_scale(image.shape[0]) if scale is None else scale
    rgb = image.repeat(3, axis=2) if image.shape[2] == 1 else image
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([rgb, gap, overlay(image, truth), gap, overlay(image, pred)], axis=1)
    pil = Image.fromarray(strip)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use: training processes, which
    draw their pictures with Pillow alone, do not pay its import (about 0.6 CPU-seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_confusion_matrix(confusion: np.ndarray, class_names: list[str], path: Path) -> None:
    plt = _pyplot()
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in ticks:
        for j in ticks:
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix (rows normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_per_class_bars(values: dict[str, float], title: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(values) + 1.5))
    names = list(values)
    ax.barh(names, [values[n] if values[n] is not None else 0 for n in names], color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay_grid(images: np.ndarray, truth: np.ndarray, preds: np.ndarray, scale: int = 3) -> Image.Image:
    """A titled grid, one comparison strip (image | truth | prediction) per row, for uint8 images (N, C, H, W)."""
    strips = [np.asarray(comparison_strip(i.transpose(1, 2, 0), t, p, scale)) for i, t, p in zip(images, truth, preds)]
    gap = np.full((4 * scale, strips[0].shape[1], 3), 255, np.uint8)
    rows = [part for strip in strips for part in (strip, gap)][:-1]
    return _with_titles(Image.fromarray(np.concatenate(rows, axis=0)), images.shape[-1] * scale, 4 * scale,
                        ("image", "truth", "prediction"))


def mask_picture(mask: np.ndarray) -> np.ndarray:
    """RGB uint8: each class in its colour (background black), void grey."""
    void = mask == VOID
    ids = np.where(void, 0, mask)
    picture = class_colours(int(ids.max()) + 1)[ids]
    picture[void] = VOID_GREY
    return picture


def sample_grid(masks: np.ndarray, real: np.ndarray, drawn: np.ndarray, scale: int | None = None) -> Image.Image:
    """One row per mask: mask | real image | the images drawn from it. masks (N, H, W), real uint8
    (N, C, H, W), drawn uint8 (N, K, C, H, W); small tiles enlarged for viewing."""
    rows = [[mask, image, *samples] for mask, image, samples in zip(masks, real, drawn)]
    return panel_grid(rows, ("mask", "real", *(f"drawn {k + 1}" for k in range(drawn.shape[1]))), scale)


def panel_grid(rows: list[list[np.ndarray]], titles: tuple[str, ...], scale: int | None = None) -> Image.Image:
    """A titled grid of equal-sized panels: each a mask (H, W) of class ids, drawn in class colours,
    or a uint8 image (C, H, W); small tiles enlarged for viewing."""
    height, width = rows[0][0].shape[-2:]
    scale = strip_scale(height) if scale is None else scale
    gap = 4

    def rgb(panel: np.ndarray) -> np.ndarray:
        if panel.ndim == 2:
            return mask_picture(panel)
        image = panel.transpose(1, 2, 0)
        return image.repeat(3, axis=2) if image.shape[2] == 1 else image

    strips = []
    for panels in rows:
        column_gap = np.full((height, gap, 3), 255, np.uint8)
        strips.append(np.concatenate([part for panel in panels for part in (rgb(panel), column_gap)][:-1], axis=1))
    row_gap = np.full((gap, strips[0].shape[1], 3), 255, np.uint8)
    grid = Image.fromarray(np.concatenate([part for strip in strips for part in (strip, row_gap)][:-1], axis=0))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return _with_titles(grid, width * scale, gap * scale, titles)


def _with_titles(grid: Image.Image, panel_width: int, gap: int, titles: tuple[str, ...]) -> Image.Image:
    titled = Image.new("RGB", (grid.width, grid.height + 16), "white")
    titled.paste(grid, (0, 16))
    draw = ImageDraw.Draw(titled)
    for column, title in enumerate(titles):
        draw.text((column * (panel_width + gap) + 2, 2), title, fill="black")
    return titled


def save_difference_figure(rows: list, names: tuple[str, str], score_name: str, path: Path) -> None:
    """One row per image: image | truth | reference's prediction | contender's | where they differ,
    titled with the image's score. `rows` hold .index, .image (H, W, C), .truth, .predictions (2)
    and .scores (2); void pixels are grey."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.2 * len(rows)), squeeze=False)
    for axis_row, row in zip(axes, rows):
        rgb = row.image.repeat(3, axis=2) if row.image.shape[2] == 1 else row.image
        panels = [(rgb, f"test image {row.index}"), (overlay(row.image, row.truth), "truth")]
        panels += [(overlay(row.image, pred), f"{name}: {score_name} {score:.3f}")
                   for pred, name, score in zip(row.predictions, names, row.scores)]
        panels.append((disagreement(row.truth, *row.predictions), f"green: only {names[1]} right\n"
                       f"magenta: only {names[0]} right"))
        for axis, (picture, title) in zip(axis_row, panels):
            axis.imshow(picture)
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    fig.tight_layout()
    _save_whole(fig, path)


def save_learning_curves(curves: dict[str, dict[str, list[tuple[int, float, float]]]], path: Path) -> None:
    """One panel per metric: each configuration's (steps, mean, std) points over seeds, steps on a log axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for axis, (metric, lines) in zip(axes[0], curves.items()):
        for name, points in lines.items():
            steps, means, stds = zip(*points)
            axis.errorbar(steps, means, yerr=stds, marker="o", capsize=3, label=name)
        axis.set_xscale("log")
        axis.set_xlabel("segmenter updates (steps)")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    _save_whole(fig, path)


def _save_whole(fig, path: Path) -> None:
    """A PNG written whole or not at all."""
    plt = _pyplot()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    partial = Path(path).with_name(f".{Path(path).name}.partial")
    fig.savefig(partial, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    partial.replace(path)


def disagreement(truth: np.ndarray, reference: np.ndarray, contender: np.ndarray) -> np.ndarray:
    """RGB: green where only the contender's class is right, magenta where only the reference's is,
    white where both agree, grey at void pixels."""
    picture = np.full((*truth.shape, 3), 255, np.uint8)
    right_a, right_b = reference == truth, contender == truth
    picture[right_b & ~right_a] = (0, 170, 0)
    picture[right_a & ~right_b] = (200, 0, 200)
    picture[truth == VOID] = VOID_GREY
    return picture
