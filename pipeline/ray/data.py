"""Prepare's blocks of pairs as Ray Data tasks (the prepare stage with data.ray_data, and
`ganseg bench prepare`): the library's block runner (ganseg/data/prepare.py) injected, so the
library stays Ray-free."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from ganseg.data.blocks import BlockResult, BlockTask
from ganseg.data.writers import make_folders
from ganseg.memory import peak_mb
from pipeline.console import quiet_ray_data
from pipeline.storage import Location
from pipeline.store import StoreError, download, scratch_root, upload
from pipeline.workspace import GANSEG_STORE, project_store


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

        quiet_ray_data()
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        per_task = max(1, len(tasks) // (cpus * self.TASKS_PER_CPU))
        # As JSON text: a plain column for Ray Data, and nothing a worker unpickles.
        items = [{"tasks": json.dumps([task.to_dict() for task in tasks[start : start + per_task]])}
                 for start in range(0, len(tasks), per_task)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        where = _driver_side(tasks[0].staging)
        for row in dataset.map(partial(_prepare_row, prepare, where), num_cpus=1).iter_rows():
            results = [BlockResult.from_dict(result) for result in json.loads(row["results"])]
            self.nodes[row["node"]] += len(results)
            self.worker_peak_mb[row["node"], row["pid"]] = row["peak_mb"]
            yield from results
        if where["store"]:  # the blocks of other nodes left their chunks on the store
            pull_staging(tasks[0].staging)


def _driver_side(staging: Path) -> dict:
    """What a block task needs to know of the driver: its node, and with the project on a store
    (pipeline/store.py) the store, the driver's working copy and its staging folder."""
    import ray

    store = os.environ.get(GANSEG_STORE)
    scratch = str(scratch_root(project_store())) if store else None
    return {"node": ray.get_runtime_context().get_node_id(), "store": store, "scratch": scratch,
            "staging": str(staging)}


def _prepare_row(prepare: Callable[[BlockTask], BlockResult], where: dict, row: dict) -> dict:
    import ray

    tasks = [BlockTask.from_dict(task) for task in json.loads(row["tasks"])]
    if where["store"] and ray.get_runtime_context().get_node_id() != where["node"]:
        results = [block_elsewhere(prepare, task, where).to_dict() for task in tasks]
    else:  # on the driver's node: its files and staging folder are here
        results = [prepare(task).to_dict() for task in tasks]
    return {"results": json.dumps(results), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "peak_mb": peak_mb()}


STAGING = ".ganseg/staging"  # on the store: the chunks that prepare's blocks on other nodes wrote


def block_elsewhere(prepare: Callable, task, where: dict):
    """Prepare one block (ganseg/data/blocks.py) on a node other than the driver's, with the project on
    a store: its image and mask files pulled from the store into this node's working copy, its chunks
    written to a local folder, then uploaded for the driver (`pull_staging`)."""
    from dataclasses import replace

    store = project_store()
    scratch, driver = scratch_root(store), Path(where["scratch"])
    pairs = []
    for pair in task.pairs:
        image, mask = (_pulled_file(store, driver, scratch, path) for path in (pair.image, pair.mask))
        pairs.append(replace(pair, image=image, mask=mask))
    with tempfile.TemporaryDirectory() as folder:
        staging = Path(folder)
        make_folders(staging)  # as the driver made them in its staging folder
        result = prepare(replace(task, pairs=pairs, staging=staging))
        for path in (p for p in staging.rglob("*") if p.is_file()):
            upload(path, store.join(STAGING, Path(where["staging"]).name, path.relative_to(staging).as_posix()))
    return result


def _pulled_file(store: Location, driver_scratch: Path, scratch: Path, path: Path) -> Path:
    if not path.is_relative_to(driver_scratch):
        raise StoreError(f"{path} lies outside the project, so only the node that runs prepare can read it: with"
                         " GANSEG_STORE, data.source must be a folder inside the project (it is pushed to the store)")
    rel = path.relative_to(driver_scratch).as_posix()
    local = scratch / rel
    if not local.is_file():
        download(store.join(rel), local)
    return local


def pull_staging(staging: Path) -> None:
    """The chunks that blocks on other nodes uploaded, into the driver's staging folder; then off the store."""
    store = project_store()
    uploaded = store.join(STAGING, staging.name)
    if not uploaded.exists():
        return
    download(uploaded, staging)
    store.filesystem.delete_dir(uploaded.path)
