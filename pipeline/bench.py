"""`ganseg bench throughput` and `ganseg bench quality`.

throughput: the GAN step in a plain loop, and under Ray Train with 1 and 2 workers. Every runner
trains the same model on the same in-memory batches with one thread per worker, so the
differences are the cost of Ray and of DDP. Images/s is steady state (after warm-up).

quality: the supervised baseline against the GAN segmenter or named variants of it (and, with a
label fraction, supervised against semi-supervised on that fraction) on a dataset folder, compared
seed by seed; see ganseg/bench/quality.py.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch

from ganseg.bench.tables import fewlabels_table, imagegen_table, paired_table, quality_table, throughput_table
from ganseg.bench.throughput import flops_per_step, matmul_gflops, synthetic_batches, timed_steps
from ganseg.config import Params
from ganseg.fileio import write_json
from ganseg.segmenter.training import build_training_state

WARMUP, STEPS, BATCHES = 3, 20, 4


def plain_loop(params: Params) -> dict:
    torch.set_num_threads(1)
    state = build_training_state(params, params.data.channels, params.data.num_classes)
    seconds = timed_steps(state, synthetic_batches(params, BATCHES), params, WARMUP, STEPS)
    return {"workers": 1, "images_per_s": STEPS * params.train.batch_size / seconds}


def bench_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    started = time.time()
    params = Params.model_validate(config["params"])
    context = ray.train.get_context()
    world = context.get_world_size()
    state = build_training_state(
        params, params.data.channels, params.data.num_classes, wrap=ray.train.torch.prepare_model
    )
    sync = dist.barrier if world > 1 else (lambda: None)
    seconds = timed_steps(state, synthetic_batches(params, BATCHES), params, WARMUP, STEPS, sync)
    # Train V2 hands the driver only metrics reported with a checkpoint.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = ray.train.Checkpoint.from_directory(folder) if context.get_world_rank() == 0 else None
        ray.train.report({"seconds": seconds, "worker_started": started}, checkpoint=checkpoint)


def ray_train(params: Params, workers: int) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        bench_loop_per_worker,
        train_loop_config={"params": params.model_dump()},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=RunConfig(name=f"bench-{workers}w-{int(time.time())}", storage_path=str(Path("runs/ray").resolve())),
    )
    submitted = time.time()
    metrics = trainer.fit().metrics
    return {
        "workers": workers,
        "images_per_s": workers * STEPS * params.train.batch_size / metrics["seconds"],
        "startup_s": metrics["worker_started"] - submitted,
    }


def run(params: Params, out: Path | None) -> dict:
    from pipeline.runtime import start_ray

    params = params.with_overrides({"train.use_gpu": False})
    flops = flops_per_step(params)
    peak_1, peak_2 = matmul_gflops(1), matmul_gflops(2)
    rows = {"plain loop": plain_loop(params)}
    start_ray()
    rows["Ray Train, 1 worker"] = ray_train(params, 1)
    rows["Ray Train, 2 workers"] = ray_train(params, 2)
    for row in rows.values():
        achieved = flops / params.train.batch_size * row["images_per_s"] / 1e9
        peak = peak_1 if row["workers"] == 1 else peak_2
        row |= {"gflops": achieved, "fraction_of_peak": achieved / peak}
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} cores visible to torch",
        "image_size": params.data.image_size,
        "batch_per_worker": params.train.batch_size,
        "gflop_per_step": flops / 1e9,
        "matmul_peak_gflops": {"1 thread": peak_1, "2 threads": peak_2},
        "ray_1_worker_vs_plain": rows["Ray Train, 1 worker"]["images_per_s"] / rows["plain loop"]["images_per_s"],
        "runners": rows,
    }
    print(throughput_table(report))
    if out:
        write_json(out, report)
    return report


def quality(
    params: Params, data: str, seeds: int, steps: int, label_fraction: float | None, out: Path | None,
    variants: list[tuple[str, dict]] | None = None, split: str = "test", figure: Path | None = None,
) -> dict:
    from ganseg.bench import quality as q
    from ganseg.bench.contenders import check_contenders, contenders
    rows = contenders(label_fraction, variants)
    check_contenders(params, rows)  # before preparing or training anything
    with tempfile.TemporaryDirectory(prefix="ganseg-bench-") as scratch:
        data_dir = _prepared(params, data, Path(scratch))
        print(f"  {len(rows)} configs x {seeds} seeds x {steps} steps, scored on the {split} split")
        report = q.run_benchmark(params, data_dir, seeds, steps, rows, label_fraction, split, figure=figure)
    _finish(report, data, [quality_table(report), paired_table(report)], out)
    if figure:
        print(f"wrote {figure}: the images where {report['figure_configs'][1]} and the baseline differ most")
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


def _finish(report: dict, data: str, tables: list[str], out: Path | None) -> dict:
    """The report of a bench on `data`: its tables printed, and written as JSON to `out`."""
    report["data"] = data
    print("\n\n".join(tables))
    if out:
        write_json(out, report)
        print(f"wrote {out}")
    return report


def _prepared(params: Params, data: str, scratch: Path) -> Path:
    from ganseg.data.prepare import prepare_dataset

    data_dir = scratch / "prepared"
    stats = prepare_dataset(params.data.model_copy(update={"source": data}), params.seed, data_dir)
    print(f"prepared {data}: {stats.counts} tiles of {stats.image_size} px, {stats.test_images} test images")
    return data_dir
