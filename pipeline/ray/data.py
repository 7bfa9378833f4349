"""Prepare's blocks of pairs as Ray Data tasks (the prepare stage with data.ray_data, and
`ganseg bench prepare`): the library's block runner (ganseg/data/prepare.py) injected, so the
library stays Ray-free."""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import partial
from typing import Callable, Iterator

from ganseg.data.blocks import BlockResult, BlockTask
from ganseg.memory import peak_mb
from pipeline.console import quiet_ray_data


class RayDataBlocks:
    """Runs prepare's blocks as Ray Data tasks, one CPU each, on the cluster this process joined; the
    blocks write into the staging folder themselves, and only their small results come back.

    A task takes several consecutive blocks when there are many: each task costs about 0.15 s of
    dispatch on a small machine, which small blocks would pay a few hundred times over; but a
    large task left for last keeps the other CPUs idle, so about TASKS_PER_CPU tasks go to each CPU.
    `nodes` counts the blocks each node prepared; `worker_peak_mb` is each worker process's largest
    resident memory, as the workers last reported it.
    """

    TASKS_PER_CPU = 8

    def __init__(self):
        self.nodes: Counter[str] = Counter()
        self.worker_peak_mb: dict[tuple[str, int], float] = {}

    def __call__(self, prepare: Callable[[BlockTask], BlockResult], tasks: list[BlockTask]) -> Iterator[BlockResult]:
        if not tasks:  # no usable pair: prepare lists the problems; Ray Data has nothing to run
            return
        import ray
        import ray.data
        from ray.util.debug import log_once

        quiet_ray_data()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # prepare's own bar counts the images;
        log_once("ray_data_progress_manager_disabled")  # and Ray's warning that its bars are off is spent
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        per_task = max(1, len(tasks) // (cpus * self.TASKS_PER_CPU))
        # As JSON text: a plain column for Ray Data, and nothing a worker unpickles.
        items = [{"tasks": json.dumps([task.to_dict() for task in tasks[start : start + per_task]])}
                 for start in range(0, len(tasks), per_task)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        for row in dataset.map(partial(_prepare_row, prepare), num_cpus=1).iter_rows():
            results = [BlockResult.from_dict(result) for result in json.loads(row["results"])]
            self.nodes[row["node"]] += len(results)
            self.worker_peak_mb[row["node"], row["pid"]] = row["peak_mb"]
            yield from results


def _prepare_row(prepare: Callable[[BlockTask], BlockResult], row: dict) -> dict:
    import ray

    results = [prepare(BlockTask.from_dict(task)).to_dict() for task in json.loads(row["tasks"])]
    return {"results": json.dumps(results), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "peak_mb": peak_mb()}
