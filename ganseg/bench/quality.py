"""Segmentation quality of the GAN segmenter against the supervised baseline: pure PyTorch, no Ray.

Every configuration (see ganseg/bench/contenders.py) trains on the same prepared split for the
same number of steps, seed by seed, and is scored on the held-out test images at their own size
(or on the validation tiles, to choose settings without looking at the test split). Each
configuration but the baseline is then compared with its reference seed by seed
(ganseg/bench/paired.py).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ganseg.bench.contenders import Contender, at_budgets
from ganseg.bench.differences import largest_differences
from ganseg.bench.epochs import EpochSaves, RunClock
from ganseg.bench.machine import machine
from ganseg.bench.paired import paired_comparisons
from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.data.datasets import Endless, labelled_frequency, training_batches
from ganseg.errors import ParamsError
from ganseg.fileio import read_json
from ganseg.segmenter.evaluation import (
    evaluate_full_size,
    scored_description,
    summarise,
)
from ganseg.segmenter.networks import build_segmenter
from ganseg.segmenter.training import TrainingState, build_training_state, train_epoch
from ganseg.synthetic_pairs import GeneratedPairs
from ganseg.viz import save_difference_figure

AUCS = ("auc_roc", "auc_pr")  # binary tasks only


def train_and_score(
    params: Params, data_dir: Path, steps: int, progress: str = "", split: str = "test", keep: int = 0,
    weights: Path | None = None, saves: EpochSaves | None = None,
) -> dict:
    """Train from scratch (`train_segmenter`, with a progress bar titled `progress` if given, its
    state after each epoch in `saves`), then score the test images at full size (or the validation
    tiles). Deterministic for a given params.seed. With `keep`, the first `keep` (image, truth,
    prediction) triples come back under "predictions"; with `weights`, the scored segmenter's weights
    are saved to that file. The wall and CPU seconds count earlier sittings of a resumed run."""
    clock = saves.clock if saves else RunClock()
    state, labelled_tiles = train_segmenter(params, data_dir, steps, progress, saves=saves)
    train_s, _ = clock.seconds()
    if weights:
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state.eval_segmenter.state_dict(), weights)
    scores = score_segmenter(state.eval_segmenter, params, data_dir, split, keep)
    wall_s, cpu_s = clock.seconds()
    images = steps * params.train.batch_size
    return scores | {
        "images_per_s": images / train_s if train_s else float("nan"),
        "labelled_tiles": labelled_tiles,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
    }


def score_segmenter(segmenter: torch.nn.Module, params: Params, data_dir: Path, split: str = "test",
                    keep: int = 0) -> dict:
    """mIoU, Dice and boundary F1 per class (and the AUCs of a binary task) on the `split` images at
    full size (validation: its tiles); with `keep`, the first `keep` (image, truth, prediction) triples."""
    stats = read_dataset_stats(data_dir)
    result = evaluate_full_size(segmenter, data_dir, stats, params.evaluate.boundary_tolerance, keep=keep,
                                progress=False, flips=params.evaluate.flip_tta, split=split)
    summary = summarise(result.confusion, stats.class_names, stats.train_frequency, result.boundary_f1, result.auc)
    return {
        "miou": summary["miou"],
        "dice": summary["dice"],
        "boundary_f1": summary["boundary_f1"],
        **{key: summary[key] for key in AUCS if key in summary},
        "scored_images": result.num_images,
    } | ({"predictions": result.samples} if keep else {})


def train_segmenter(params: Params, data_dir: Path, steps: int, progress: str = "",
                    synthetic: GeneratedPairs | None = None,
                    saves: EpochSaves | None = None) -> tuple[TrainingState, int]:
    """A segmenter trained from scratch for `steps` segmenter updates, split into train.epochs equal
    epochs (with `synthetic`, part of each batch generated); and how many labelled tiles it saw.
    With `saves`, the state after each epoch goes there, and a run saved there before goes on from
    its last epoch (not with `synthetic`, whose generator is not saved). With `progress`, on a
    terminal, a bar of the steps with that title, gone when done (a log gets no bar).
    Deterministic for a given params.seed, resumed or not."""
    if synthetic is not None and saves is not None:
        raise ValueError("a run with generated pairs cannot save its epochs: its image generator is not saved")
    torch.manual_seed(params.seed)
    stats = read_dataset_stats(data_dir)
    state = build_training_state(params, stats.channels, stats.num_classes, labelled_frequency(data_dir, params))
    labelled, unlabelled = training_batches(
        data_dir, params, stats.image_size, lambda dataset: _shuffled(dataset, params)
    )
    batches = Endless(labelled)
    done = saves.restore(state, batches, unlabelled) if saves else 0
    epochs = params.train.epochs
    per_epoch = math.ceil(steps / epochs)
    with tqdm(total=steps, initial=min(steps, done * per_epoch), desc=progress, unit="step", leave=False,
              disable=None if progress else True) as bar:
        for epoch in range(done + 1, epochs + 1):
            count = min(per_epoch, steps - (epoch - 1) * per_epoch)
            if count <= 0:
                break
            train_epoch(state, _ticking(itertools.islice(batches, count), bar), params.train, epoch=epoch,
                        unlabelled=unlabelled, synthetic=synthetic)
            if saves:
                saves.save(state, epoch, batches, unlabelled)
    return state, len(labelled.dataset)


def _ticking(batches, bar: tqdm):
    for batch in batches:
        yield batch
        bar.update()


def _shuffled(dataset, params: Params) -> DataLoader:
    return seeded_loader(dataset, params.train.batch_size, params.seed)


def seeded_loader(dataset, batch_size: int, seed: int) -> DataLoader:
    """Shuffled in an order fixed by `seed`; a last short batch dropped when there is a full one."""
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(dataset) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=generator)


def run_benchmark(
    params: Params, data_dir: Path, seeds: int, steps: int | list[int], rows: list[Contender],
    label_fraction: float | None = None, split: str = "test", log=print, figure: Path | None = None,
    earlier: list[dict] | None = None, save_partial=None, segmenters: Path | None = None,
    unfinished: Path | None = None, resume: bool = False,
) -> dict:
    """Every contender on seeds params.seed, params.seed+1, ...; the runs, their mean and std, and
    each contender's paired differences with its reference. With several budgets of `steps`, every
    contender at each (a learning curve: rows 'NAME @ STEPS'). With `figure`, a PNG there of the images
    where the first contender compared with the baseline differs from it most (first seed, largest budget).

    Runs go seed by seed, so that an interrupted benchmark holds whole pairs: `save_partial(report)`
    gets the report so far after each run, with the earlier runs still ahead, and a later call with
    those runs as `earlier` takes each run of the same config, overrides, seed and budget as it is
    instead of training it again. The drawn pair's segmenters are kept in the folder `segmenters`,
    when given, so that a resumed benchmark can still draw its figure. With `unfinished`, a folder,
    each run saves its state there after every epoch (ganseg/bench/epochs.py) until it ends; with
    `resume`, a run saved there goes on from its last epoch."""
    stats = read_dataset_stats(data_dir)
    budgets = [steps] if isinstance(steps, int) else list(steps)
    if len(budgets) > 1:
        rows = at_budgets(rows, budgets)
    drawn = _drawn_pair(rows) if figure else ()
    done = {(run["config"], run["seed"], run["steps"]): run for run in earlier or []}
    runs, predictions = [], {}
    planned = [(offset, contender, (contender.name, params.seed + offset, contender.steps or budgets[0]))
               for offset, contender in itertools.product(range(seeds), rows)]
    for position, (offset, contender, key) in enumerate(planned):
        config = params.with_overrides(contender.overrides | {"seed": params.seed + offset})
        budget = key[2]
        keep = _scored_count(stats, split) if offset == 0 and contender.name in drawn else 0
        weights = segmenters / _file_name(contender.name) if keep and segmenters else None
        run, kept = _taken(done.get(key), contender, config, data_dir, split, keep, weights)
        saves = None
        if run:
            log(f"  {contender.name}, seed {config.seed}: mIoU {run['miou']:.4f} (from the earlier report)")
        else:
            saves = EpochSaves(unfinished / _run_file_name(contender.name, config.seed, budget), config, budget,
                               resume) if unfinished else None
            run = _trained_run(contender, config, data_dir, budget, split, keep, weights, log, saves)
            kept = run.pop("predictions", None)
        if keep:
            predictions[contender.name] = kept
        runs.append(run)
        if save_partial:
            later = [done[ahead] for _, _, ahead in planned[position + 1:] if ahead in done]
            save_partial(_report(params, stats, budgets, seeds, label_fraction, split, rows, runs + later))
        if saves:
            saves.discard()  # once the report holds the run
    if drawn:
        _draw_differences(predictions, drawn, stats, figure)
    return _report(params, stats, budgets, seeds, label_fraction, split, rows, runs) | (
        {"figure": str(figure), "figure_configs": list(drawn)} if drawn else {})


def _taken(earlier_run: dict | None, contender: Contender, config: Params, data_dir: Path, split: str, keep: int,
           weights: Path | None) -> tuple[dict | None, list | None]:
    """An earlier run of this config with the same overrides, as it is (else None, to train); for a
    drawn run, also the predictions of its kept segmenter, which must score what the run recorded."""
    if not earlier_run or earlier_run["overrides"] != json.loads(json.dumps(contender.overrides)):
        return None, None
    if not keep:
        return earlier_run, None
    if not (weights and weights.exists()):
        return None, None
    try:
        rescored = score_saved_segmenter(config, data_dir, split, keep, weights)
    except RuntimeError:  # weights of another architecture
        return None, None
    if not math.isclose(rescored["miou"], earlier_run["miou"], abs_tol=1e-6):
        return None, None
    return earlier_run, rescored["predictions"]


def _trained_run(contender: Contender, config: Params, data_dir: Path, steps: int, split: str, keep: int,
                 weights: Path | None, log, saves: EpochSaves | None) -> dict:
    scores = train_and_score(config, data_dir, steps, f"  {contender.name}, seed {config.seed}", split, keep, weights,
                             saves)
    resumed = f", resumed after epoch {saves.resumed_after}" if saves and saves.resumed_after else ""
    log(f"  {contender.name}, seed {config.seed}: mIoU {scores['miou']:.4f}"
        f" ({scores['wall_s']:.0f} s, {scores['images_per_s']:.1f} img/s{resumed})")
    return {"config": contender.name, "seed": config.seed, "overrides": contender.overrides, "steps": steps} | scores


def _report(params: Params, stats, budgets: list[int], seeds: int, label_fraction: float | None, split: str,
            rows: list[Contender], runs: list[dict]) -> dict:
    """The report of `runs` (all of them, or those done so far), listed config by config."""
    order = {row.name: index for index, row in enumerate(rows)}
    runs = sorted(runs, key=lambda run: (order[run["config"]], run["seed"]))
    references = {row.name: row.reference for row in rows if row.reference}
    return {
        "machine": machine(),
        "steps": budgets[0] if len(budgets) == 1 else budgets,
        "seeds": seeds,
        "label_fraction": label_fraction,
        "class_names": stats.class_names,
        "image_size": stats.image_size,
        "fit": stats.fit,
        "split": split,
        "scored": scored_description(stats, split),
        "params": params.model_dump(mode="json"),
        "contenders": [{"name": row.name, "overrides": row.overrides, "reference": row.reference} for row in rows],
        "runs": runs,
        "summary": summarise_runs(runs, stats.class_names),
        "paired": paired_comparisons(runs, references, paired_metrics(stats.class_names)),
    }


def score_saved_segmenter(params: Params, data_dir: Path, split: str, keep: int, weights: Path) -> dict:
    """`score_segmenter` of the segmenter saved in `weights`, with its first `keep` predictions."""
    stats = read_dataset_stats(data_dir)
    segmenter = build_segmenter(params.model, stats.channels, stats.num_classes)
    segmenter.load_state_dict(torch.load(weights, weights_only=True))
    return score_segmenter(segmenter, params, data_dir, split, keep)


def _file_name(config: str) -> str:
    return re.sub(r"[^\w.-]+", "_", config) + ".pt"


def _run_file_name(config: str, seed: int, steps: int) -> str:
    return _file_name(f"{config} seed {seed} {steps} steps")


def earlier_runs(out: Path | None, params: Params, data: str, split: str, label_fraction: float | None) -> list[dict]:
    """The runs an interrupted `bench quality` wrote to `out`, checked to be this benchmark's."""
    if out is None:
        raise ParamsError("--resume continues the report that --out FILE was writing: give that --out")
    if not out.exists():
        print(f"--resume: {out} does not exist yet, every run trains")
        return []
    earlier = read_json(out)
    now = {"data": data, "split": split, "label_fraction": label_fraction, "params": params.model_dump(mode="json")}
    differing = [key for key, value in now.items() if earlier.get(key) != value]
    if differing:
        raise ParamsError(f"--resume: {out} holds a benchmark with another {' and '.join(differing)}; rerun with"
                          " the same --data, --split, --label-fraction, params and --set, or drop --resume (or give"
                          " another --out)")
    state = "a finished" if earlier.get("complete", True) else "an unfinished"
    print(f"--resume: {out} holds {state} benchmark of {len(earlier['runs'])} run(s); those of the same config,"
          " overrides, seed and steps are taken, and the report keeps only this benchmark's runs")
    return earlier["runs"]


def _scored_count(stats, split: str) -> int:
    return stats.test_images if split == "test" else stats.counts["val"]


def _drawn_pair(rows: list[Contender]) -> tuple[str, str]:
    """The baseline and the first configuration compared with it, at the largest budget."""
    largest = rows[-1].steps
    baseline = next(row for row in rows if row.reference is None and row.steps == largest)
    first = next(row for row in rows if row.reference == baseline.name)
    return baseline.name, first.name


def _draw_differences(predictions: dict, drawn: tuple[str, str], stats, figure: Path) -> None:
    rows = largest_differences(predictions[drawn[0]], predictions[drawn[1]], stats.num_classes)
    score_name = f"Dice {stats.class_names[1]}" if stats.num_classes == 2 else "mIoU"
    save_difference_figure(rows, drawn, score_name, figure)


def paired_metrics(class_names: list[str]) -> dict:
    """What the paired comparison reads from a run: mIoU; for two classes also class 1's Dice and AUC-ROC."""
    metrics = {"mIoU": lambda run: run["miou"]}
    if len(class_names) == 2:
        foreground = class_names[1]
        metrics[f"Dice {foreground}"] = lambda run: run["dice"][foreground]
        metrics["AUC-ROC"] = lambda run: run.get("auc_roc")
    return metrics


def learning_curves(report: dict) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """Per metric (class 1's Dice and AUC-ROC for two classes, else mIoU), per configuration: the
    (steps, mean, std over seeds) of each budget it trained for."""
    names = report["class_names"]
    metrics = {key: read for key, read in paired_metrics(names).items() if len(names) != 2 or key != "mIoU"}
    curves: dict = {metric: {} for metric in metrics}
    for metric, read in metrics.items():
        for config in dict.fromkeys(run["config"] for run in report["runs"]):
            mine = [run for run in report["runs"] if run["config"] == config]
            spread = mean_std([read(run) for run in mine])
            if spread["n"]:
                name = config.rsplit(" @ ", 1)[0]
                curves[metric].setdefault(name, []).append((mine[0]["steps"], spread["mean"], spread["std"]))
    return curves


def summarise_runs(runs: list[dict], class_names: list[str]) -> dict:
    """Per contender: mean and std (over seeds) of mIoU, the AUCs (binary tasks), img/s, wall time
    per run and each class's Dice and boundary F1."""
    summary: dict = {}
    for name in dict.fromkeys(run["config"] for run in runs):
        mine = [run for run in runs if run["config"] == name]
        row = {key: mean_std([r[key] for r in mine]) for key in ("miou", *AUCS) if key in mine[0]}
        row |= {key: mean_std([r.get(key) for r in mine]) for key in ("images_per_s", "wall_s", "cpu_s")}
        for metric in ("dice", "boundary_f1"):
            row[metric] = {c: mean_std([r[metric][c] for r in mine]) for c in class_names}
        summary[name] = row
    return summary


def mean_std(values: list) -> dict:
    kept = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not kept.size:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(kept.mean()), "std": float(kept.std(ddof=1)) if kept.size > 1 else 0.0, "n": int(kept.size)}
