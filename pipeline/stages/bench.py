"""`ganseg bench throughput` and `ganseg bench quality`.

throughput: the GAN step in a plain loop, and under Ray Train with 1 and 2 workers. Every runner
trains the same model on the same in-memory batches with one thread per worker, so the
differences are the cost of Ray and of DDP; one more runs 2 workers on data.source prepared, read
as the train stage reads it (each worker its shard of the memory-mapped tiles, augmented), and
reports the share of step time they spent waiting for batches. Images/s is steady state (after
warm-up).

quality: the supervised baseline against the GAN segmenter or named variants of it (and, with a
label fraction, supervised against semi-supervised on that fraction) on a dataset folder, compared
seed by seed; see ganseg/bench/quality.py.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganseg.bench.machine import machine
from ganseg.bench.tables import (
    fewlabels_table,
    imagegen_table,
    paired_table,
    predict_folder_table,
    predict_table,
    prepare_table,
    quality_table,
    throughput_table,
)
from ganseg.bench.throughput import (
    BATCHES,
    WARMUP,
    flops_per_step,
    image_generator_step,
    matmul_gflops,
    segmenter_step,
    synthetic_batches,
    timed_steps,
    two_processes,
)
from ganseg.config import Params
from ganseg.errors import ParamsError
from ganseg.fileio import write_json
from ganseg.segmenter.training import build_training_state

READING = "Ray Train, 2 workers, reading data.source prepared"
PLAIN_VARIANTS = {  # name: params overrides, each timed in the plain loop against fp32
    "fp32": {},
    "bf16": {"train.precision": "bf16"},
    "channels_last": {"train.channels_last": True},
    "torch.compile": {"train.compile": True},
}



def parse_variants(text: str) -> tuple[str, ...]:
    """"fp32,bf16" -> ("fp32", "bf16"): plain-loop variants by name (fp32 is always timed: the others
    are compared with it)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PLAIN_VARIANTS]
    if unknown or not names:
        raise ParamsError(f"--variants takes names from {', '.join(PLAIN_VARIANTS)}, comma-separated, not {text!r}")
    return names

def plain_loop(params: Params, steps: int, image_generator: bool = False) -> dict:
    """Images/s of the segmenter's training step (or the image generator's) in a loop of one thread."""
    torch.set_num_threads(1)
    if image_generator:
        step, batch = image_generator_step(params), params.imagegen.batch_size
    else:
        state = build_training_state(params, params.data.channels, params.data.num_classes)
        step, batch = segmenter_step(state, params), params.train.batch_size
    timing = timed_steps(step, itertools.cycle(synthetic_batches(params, BATCHES, batch)), WARMUP, steps)
    images_per_s = steps * batch / timing.seconds
    return {"workers": 1, "images_per_s": images_per_s,
            "warmup_extra_s": timing.warmup_s - WARMUP * timing.seconds / steps}


def ray_train(params: Params, workers: int, steps: int, data_dir: Path | None = None) -> dict:
    """Images/s of Ray Train with `workers` workers on in-memory batches, or reading `data_dir`, a
    prepared folder, as the train stage does (then also the workers' mean share of step time spent
    waiting for batches): the throughput job (ganseg/jobs/throughput.py) in the one worker loop."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ganseg.jobs.throughput import ThroughputJob
    from pipeline.ray.worker import loop_config, train_loop_per_worker

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(ThroughputJob, params, data_dir, options={"steps": steps}),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=RunConfig(name=f"bench-{workers}w-{int(time.time())}", storage_path=str(Path("runs/ray").resolve())),
    )
    submitted = time.time()
    metrics = trainer.fit().metrics
    row = {
        "workers": workers,
        "images_per_s": workers * steps * params.train.batch_size / metrics["seconds"],
        "startup_s": metrics["worker_started"] - submitted,
    }
    return row | ({"waiting_for_data_share": metrics["waiting_for_data_share"]} if data_dir else {})


def run(params: Params, out: Path | None, steps: int = 50, rounds: int = 3, variant_steps: int = 10,
        variants: tuple[str, ...] = tuple(PLAIN_VARIANTS)) -> dict:
    """The plain loop in fp32 and with each of `variants` (of PLAIN_VARIANTS; `variant_steps` per
    window: an emulated bf16 step is 10x slower), the image generator's step (imagegen.*, fp32,
    `variant_steps` per window), then `rounds` rounds of plain loop, two processes without
    Ray (independent, and DDP over gloo: what the cores allow and what DDP costs), Ray Train with 1
    and with 2 workers, and 2 workers reading data.source prepared (fp32, `steps` per window). A
    shared machine's speed drifts by several per cent within minutes, so the runners are compared
    within each round and the medians over rounds reported."""
    from pipeline.ray.cluster import start_ray

    params = params.with_overrides({"train.use_gpu": False, "train.precision": "fp32", "train.channels_last": False,
                                    "train.compile": False})
    described = machine()
    flops = flops_per_step(params)
    peak_1, peak_2 = matmul_gflops(1), matmul_gflops(2)
    timed = {}
    for name in ("fp32", *(v for v in variants if v != "fp32")):
        timed[name] = plain_loop(params.with_overrides(PLAIN_VARIANTS[name]), steps if name == "fp32" else variant_steps)
        print(f"  plain loop, {name}: {timed[name]['images_per_s']:.1f} images/s")
    image_generator = plain_loop(params, variant_steps, image_generator=True)
    print(f"  plain loop, the image generator's step: {image_generator['images_per_s']:.1f} images/s")
    start_ray()
    with tempfile.TemporaryDirectory(prefix="ganseg-bench-throughput-") as scratch:
        measured = _rounds(params, steps, rounds, _prepared(params, params.data.source, Path(scratch)))
    rows = {name: _median_row([m[name] for m in measured]) for name in measured[0]}
    for row in rows.values():
        achieved = flops / params.train.batch_size * row["images_per_s"] / 1e9
        peak = peak_1 if row["workers"] == 1 else peak_2
        row |= {"gflops": achieved, "fraction_of_peak": achieved / peak}
    fp32 = timed["fp32"]["images_per_s"]
    report = {
        "machine": described,
        "image_size": params.data.image_size,
        "batch_per_worker": params.train.batch_size,
        "steps_per_window": steps,
        "rounds": measured,
        "gflop_per_step": flops / 1e9,
        "matmul_peak_gflops": {"1 thread": peak_1, "2 threads": peak_2},
        "ray_1_worker_vs_plain": _median_ratio(measured, "Ray Train, 1 worker", "plain loop"),
        "ray_2_workers_vs_1": _median_ratio(measured, "Ray Train, 2 workers", "Ray Train, 1 worker"),
        "reading_vs_in_memory": _median_ratio(measured, READING, "Ray Train, 2 workers"),
        "independent_vs_plain": _median_ratio(measured, "2 processes, independent (no Ray)", "plain loop"),
        "ddp_vs_plain": _median_ratio(measured, "2 processes, DDP over gloo (no Ray)", "plain loop"),
        "runners": rows,
        "plain_variants": {name: row | {"vs_fp32": row["images_per_s"] / fp32} for name, row in timed.items()},
        "image_generator": image_generator | {"batch": params.imagegen.batch_size},
    }
    return _finish(report, None, [throughput_table(report)], out)


def _rounds(params: Params, steps: int, rounds: int, data_dir: Path) -> list[dict]:
    measured = []
    for number in range(1, rounds + 1):
        measured.append({
            "plain loop": plain_loop(params, steps),
            "2 processes, independent (no Ray)": two_processes(params, steps, WARMUP, BATCHES, ddp=False),
            "2 processes, DDP over gloo (no Ray)": two_processes(params, steps, WARMUP, BATCHES, ddp=True),
            "Ray Train, 1 worker": ray_train(params, 1, steps),
            "Ray Train, 2 workers": ray_train(params, 2, steps),
            READING: ray_train(params, 2, steps, data_dir),
        })
        figures = ", ".join(f"{name} {row['images_per_s']:.1f}" for name, row in measured[-1].items())
        print(f"  round {number}: {figures} images/s")
    return measured


def _median_row(rows: list[dict]) -> dict:
    """Each figure's median over the rounds."""
    return {key: float(statistics.median(row[key] for row in rows)) for key in rows[0]}


def _median_ratio(measured: list[dict], runner: str, reference: str) -> float:
    return float(statistics.median(m[runner]["images_per_s"] / m[reference]["images_per_s"] for m in measured))


def predict(params: Params, model: str | None, sizes: str, out: Path | None, folder: str = "512x64",
            ray_workers: str = "1,2") -> dict:
    """`ganseg bench predict`: sliding-window prediction (default: 512 x 512 images and one 4096 x 4096
    image), each case in a fresh process; then `ganseg predict` of a folder of `folder` images in this
    process and on each number of Ray Data workers."""
    from ganseg.bench import predict as pr
    from ganseg.bench.prepare import parse_cpus

    cases = pr.parse_cases(sizes)  # before any work
    folder_size = pr.size_and_count(folder, "--folder")
    workers = [] if ray_workers.strip() == "none" else parse_cpus(ray_workers, "--ray-workers")
    print(f"  model: {model or 'params.model with fresh weights (the speed does not depend on them)'}")
    cases = pr.run_cases(params, model, cases)
    report = {"machine": machine(), "cases": cases, "tile": cases[0]["tile"], "fit": cases[0]["fit"],
              "threads": cases[0]["threads"], **pr.window_settings()}
    tables = [predict_table(report)]
    if workers:
        report["folder"] = timed_predict_folder(params, model, *folder_size, workers)
        tables.append(predict_folder_table(report["folder"]))
    return _finish(report, None, tables, out)


def timed_predict_folder(params: Params, model: str | None, size: int, count: int, ray_workers: list[int]) -> dict:
    """Seconds of `ganseg predict` on `count` PNGs of size x size: in this process, then on each
    number of Ray Data workers (their start included; Ray's own start apart), and in how many
    pixels each run's masks differ from this process's."""
    import ray

    from ganseg.bench import predict as pr
    from pipeline.prediction import predict_folder
    from pipeline.ray.cluster import start_ray

    with tempfile.TemporaryDirectory(prefix="ganseg-bench-predict-") as scratch:
        root = Path(scratch)
        model_dir = model or str(pr.fresh_model_folder(params, root / "model"))
        images = pr.write_images(root / "images", size, count, params.data.channels)
        runs, outputs = [], []
        for workers in (0, *ray_workers):
            outputs.append(root / f"masks_{workers}")
            start = time.perf_counter()
            predict_folder(params, root, model_dir, images, outputs[-1], False, workers)
            seconds = time.perf_counter() - start
            runs.append({"workers": workers, "seconds": seconds, "images_per_s": count / seconds})
            if not workers:  # Ray's own start, timed apart from the runs
                start = time.perf_counter()
                start_ray(root / "ray.log")
                ray_start_s = time.perf_counter() - start
        ray.shutdown()
        for row, output in zip(runs, outputs):
            row["pixels_unlike_this_process"] = _differing_pixels(outputs[0], output)
    return {"size": size, "count": count, "runs": runs, "ray_start_s": ray_start_s, "threads": torch.get_num_threads()}


def _differing_pixels(first: Path, second: Path) -> int:
    """Pixels where the masks of two folders of the same mask files differ."""
    import numpy as np
    from PIL import Image

    return sum(int((np.asarray(Image.open(path)) != np.asarray(Image.open(second / path.name))).sum())
               for path in sorted(first.iterdir()))


def prepare(params: Params, images: str, size: int, cpus: str, workdir: Path | None, out: Path | None) -> dict:
    """`ganseg bench prepare`: prepare's time and peak memory on folders of `images` pairs it writes
    itself, in one process and as Ray Data tasks on each number of `cpus`."""
    from ganseg.bench import prepare as pp
    from pipeline.ray import data_bench as bench_prepare

    counts, cpu_counts = pp.parse_counts(images), pp.parse_cpus(cpus)  # before any work
    with tempfile.TemporaryDirectory(prefix="ganseg-bench-prepare-", dir=workdir) as scratch:
        rows = bench_prepare.run_sizes(params, counts, size, cpu_counts, Path(scratch))
    in_process = [row for row in rows if row["cpus"] is None]
    report = {"machine": machine(), "size": size, "fit": params.data.fit, "image_size": params.data.image_size,
              "sizes": rows, "growth_mb_per_1000": pp.memory_growth(in_process),
              "speedup": bench_prepare.speedups(rows)}
    return _finish(report, None, [prepare_table(report)], out)


def quality(
    params: Params, data: str, seeds: int, steps: int | list[int], label_fraction: float | None, out: Path | None,
    variants: list[tuple[str, dict]] | None = None, split: str = "test", figure: Path | None = None,
    curve: Path | None = None, baseline_only: bool = False, resume: bool = False,
) -> dict:
    from ganseg.bench import quality as q
    from ganseg.bench.contenders import check_contenders, contenders
    from ganseg.viz import save_learning_curves
    rows = contenders(label_fraction, variants, baseline_only)
    if figure and baseline_only:
        raise ParamsError("--figure draws where two configs differ; --baseline-only trains one")
    check_contenders(params, rows)  # before preparing or training anything
    earlier = q.earlier_runs(out, params, data, split, label_fraction) if resume else []
    save_partial = (lambda partial: write_json(out, partial | {"data": data, "complete": False})) if out else None
    segmenters = out.with_name(f"{out.stem}-segmenters") if out and figure else None
    unfinished = out.with_name(f"{out.stem}-unfinished") if out else None
    with tempfile.TemporaryDirectory(prefix="ganseg-bench-") as scratch:
        data_dir = _prepared(params, data, Path(scratch))
        budgets = steps if isinstance(steps, int) else "/".join(map(str, steps))
        print(f"  {len(rows)} configs x {seeds} seeds x {budgets} steps, scored on the {split} split")
        report = q.run_benchmark(params, data_dir, seeds, steps, rows, label_fraction, split, figure=figure,
                                 earlier=earlier, save_partial=save_partial, segmenters=segmenters,
                                 unfinished=unfinished, resume=resume) | {"complete": True}
    _finish(report, data, [quality_table(report)] + ([paired_table(report)] if report["paired"] else []), out)
    if figure:
        print(f"wrote {figure}: the images where {report['figure_configs'][1]} and the baseline differ most")
    if curve:
        save_learning_curves(q.learning_curves(report), curve)
        print(f"wrote {curve}: each config's scores against its training budget")
    return report


def imagegen(params: Params, data: str, variants: list[str], seeds: int, steps: int, judge_steps: int,
             out: Path | None, grids: Path | None) -> dict:
    from ganseg.bench import imagegen as ig

    ig.check_variants(variants)  # before preparing or training anything
    with tempfile.TemporaryDirectory(prefix="ganseg-bench-") as scratch:
        data_dir = _prepared(params, data, Path(scratch))
        print(f"  {len(variants)} variants x {seeds} seeds x {steps} steps, judged on the test tiles")
        report = ig.run_benchmark(params, data_dir, seeds, steps, judge_steps, variants, grids)
    return _finish(report, data, [imagegen_table(report)] + ([paired_table(report)] if seeds > 1 else []), out)


def fewlabels(params: Params, data: str, labels: str, seeds: int, steps: int, generator_steps: int, arms: list[str],
              share: float, out: Path | None, figure: Path | None) -> dict:
    from ganseg.bench import fewlabels as fl

    budgets = fl.parse_budgets(labels)
    fl.check_arms(arms)  # before preparing or training anything
    with tempfile.TemporaryDirectory(prefix="ganseg-bench-") as scratch:
        data_dir = _prepared(params, data, Path(scratch))
        print(f"  {len(budgets)} label budget(s) x {seeds} seeds x arms {','.join(arms)}: {steps} segmenter steps,"
              f" image generator {generator_steps} steps")
        report = fl.run_benchmark(params, data_dir, budgets, seeds, steps, generator_steps, arms, share, figure)
    _finish(report, data, [fewlabels_table(report)], out)
    if figure:
        print(f"wrote {figure}: labelled pairs next to generated ones")
    return report


def _finish(report: dict, data: str | None, tables: list[str], out: Path | None) -> dict:
    """The report of a bench (on `data`, a dataset folder, when it reads one): its tables printed,
    and written as JSON to `out`."""
    if data is not None:
        report["data"] = data
    print("\n\n".join(tables))
    if out:
        write_json(out, report)
        print(f"wrote {out}")
    return report


def _prepared(params: Params, data: str, scratch: Path) -> Path:
    """`data` prepared in `scratch`; 'synthetic' names the built-in data, written there first."""
    from ganseg.data.prepare import prepare_dataset
    from ganseg.data.synthetic import write_synthetic_dataset

    if data == "synthetic":
        data = str(write_synthetic_dataset(params.data.synthetic, params.seed, scratch / "synthetic", progress=False))
    data_dir = scratch / "prepared"
    stats = prepare_dataset(params.data.model_copy(update={"source": data}), params.seed, data_dir)
    print(f"prepared {data}: {stats.counts} tiles of {stats.image_size} px, {stats.test_images} test images")
    return data_dir
