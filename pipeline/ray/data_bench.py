"""`ganseg bench prepare`: prepare's wall time, peak memory and MB/s on folders of image/mask pairs
it writes itself (ganseg/bench/prepare.py), in this process and as Ray Data tasks on 1, 2, ... CPUs.

Each run is a fresh Python process. For a Ray Data run it keeps itself, and so the private Ray
runtime it starts, to the first k CPUs of the machine. Peak memory is the driver's from just before
prepare starts (and the part of it that prepare added: a Ray driver starts big), and that of each
Ray worker process over its life.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ganseg.bench.prepare import write_folder
from ganseg.bench.tables import prepare_run_name
from ganseg.config import Params
from ganseg.memory import peak_mb, reset_peak


def run_sizes(params: Params, counts: list[int], size: int, cpus: list[int], scratch: Path) -> list[dict]:
    """Per image count: a folder written, then prepared in process and on each number of CPUs."""
    rows = []
    for count in counts:
        source = scratch / f"source-{count}"
        source_bytes = write_folder(source, count, size)
        for runner in [None, *cpus]:
            row = _run_child(params, source, scratch / f"prepared-{count}", runner)
            row |= {"images": count, "size": size, "source_mb": source_bytes / 1e6,
                    "mb_per_s": source_bytes / 1e6 / row["seconds"]}
            rows.append(row)
            print(f"  {count} images, {prepare_run_name(row)}: {row['seconds']:.1f} s, peak {row['peak_rss_mb']:.0f} MB")
        shutil.rmtree(source)
    return rows


def speedups(rows: list[dict]) -> dict[str, float]:
    """Per image count, prepare's time on one CPU over its time on each larger number of CPUs."""
    out = {}
    for row in rows:
        one = next((r for r in rows if r["images"] == row["images"] and r["cpus"] == 1), None)
        if one and row["cpus"] and row["cpus"] > 1:
            out[f"{row['images']} images, {row['cpus']} CPUs"] = one["seconds"] / row["seconds"]
    return out


def _run_child(params: Params, source: Path, out: Path, cpus: int | None) -> dict:
    request = json.dumps({"params": params.model_dump(), "source": str(source), "out": str(out), "cpus": cpus})
    child = subprocess.run([sys.executable, "-m", "pipeline.ray.data_bench", request], capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"prepare of {source} failed:\n{child.stderr[-2000:]}")
    row = json.loads(child.stdout.strip().splitlines()[-1])
    row["prepared_mb"] = sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) / 1e6
    shutil.rmtree(out)
    return row


def measure(raw_params: dict, source: str, out_dir: str, cpus: int | None) -> dict:
    """Prepare `source` into `out_dir` from this process: seconds and peak resident memory."""
    from ganseg.data.prepare import prepare_dataset, run_in_process

    params = Params.model_validate(raw_params)
    cfg = params.data.model_copy(update={"source": source})
    row = {"cpus": cpus, "ray_start_s": 0.0, "workers": 0, "worker_peak_mb": 0.0}
    run_blocks = run_in_process
    if cpus:
        from pipeline.ray.cluster import start_ray
        from pipeline.ray.data import RayDataBlocks

        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])  # Ray's processes inherit it
        start = time.perf_counter()
        start_ray(Path(out_dir).parent / f"ray-{cpus}.log", num_cpus=cpus)
        row["ray_start_s"] = time.perf_counter() - start
        run_blocks = RayDataBlocks()
    before = reset_peak()
    start = time.perf_counter()
    stats = prepare_dataset(cfg, params.seed, out_dir, progress=False, run_blocks=run_blocks)
    row |= {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb(), "tiles": sum(stats.counts.values())}
    row["prepare_mb"] = row["peak_rss_mb"] - before
    if cpus:
        row |= {"workers": len(run_blocks.worker_peak_mb), "worker_peak_mb": max(run_blocks.worker_peak_mb.values())}
    return row


if __name__ == "__main__":  # the fresh process of _run_child
    job = json.loads(sys.argv[1])
    print(json.dumps(measure(job["params"], job["source"], job["out"], job["cpus"])))
