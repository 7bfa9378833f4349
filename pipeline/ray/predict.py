"""`ganseg predict` as Ray Data over the cluster's workers: the list of input files becomes a
dataset, and `map_batches` runs a pool of `SegmentFiles` actors, each holding the model once (on a
GPU of its own where the cluster has GPUs, else on one node's CPUs: `layout`). A worker reads its
files from where the input lies (a store, or a folder every node sees) and sends back each file's
mask PNG, the bytes that `FileSegmenter` makes in one process with as many threads; the driver
writes them (ganseg/segmenter/segment_folder.py).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ganseg.devices import cpu_forced
from ganseg.segmenter.segment_folder import FileSegmenter, Segmented
from pipeline.console import quiet_ray_data
from pipeline.storage import Location

# A task segments one block of files. At least TASKS_PER_WORKER tasks for each worker keep them all
# busy (Ray Data prefers the worker beside a block's data, so too few tasks would all go to the
# driver's node); at most FILES_PER_TASK files a task keep the progress bar moving.
TASKS_PER_WORKER = 8
FILES_PER_TASK = 16
WORKERS_START_S = 600  # the files are handed out once every worker holds its model


class SegmentFiles:
    """A Ray Data worker: the model folder (its files, sent by the driver) loaded once; each batch
    of file names read from the `source` folder and segmented."""

    def __init__(self, model_files: dict[str, bytes], source: Location, threads: int, max_image_pixels: int,
                 flips: bool, overlays: bool):
        import ray
        import torch

        torch.set_num_threads(threads)
        self.node = ray.get_runtime_context().get_node_id()
        self.source = source
        with tempfile.TemporaryDirectory() as folder:
            for name, data in model_files.items():
                Path(folder, name).write_bytes(data)
            self.segment = FileSegmenter(folder, max_image_pixels, flips, overlays)

    def __call__(self, batch: dict) -> dict:
        results = [self.segment(name, self._read(name)) for name in batch["name"]]
        return {"name": [r.name for r in results], "mask": [r.mask for r in results],
                "overlay": [r.overlay for r in results], "error": [r.error for r in results],
                "node": [self.node] * len(results), "pid": [os.getpid()] * len(results)}

    def _read(self, name: str) -> bytes:
        try:
            return self.source.join(name).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.source.join(name).uri} cannot be read on Ray node {self.node}: put the input on object"
                " storage (s3://, gs://) or on a disk that every node mounts at the same path") from None


@dataclass(frozen=True)
class Layout:
    workers: int
    threads: int  # each worker's CPUs, and its torch threads
    gpus: int  # each worker's GPUs: 0 or 1


def layout(workers: int | None, node_cpus: list[float], gpus: float, cpu_only: bool) -> Layout:
    """How many workers, with how many threads and GPUs each. Unset `workers`: one per GPU, else one
    per node with as many threads as the smallest node has CPUs, which is what one process on such a
    node uses: oneDNN picks its convolution kernels by thread count, and another kernel can move a
    logit in its last bit and so a pixel at a near-tie between classes. `workers` given: the
    cluster's CPUs shared among them, a worker's on one node."""
    use_gpus = gpus >= (workers or 1) and not cpu_only
    if workers is None:
        workers = int(gpus) if use_gpus else len(node_cpus)
        threads = sum(node_cpus) // workers if use_gpus else min(node_cpus)
    else:
        threads = sum(node_cpus) // workers
    return Layout(workers, max(1, int(min(threads, max(node_cpus)))), int(use_gpus))


class ClusterSegmenter:
    """Runs the segmentation of `names` in `source` on Ray Data workers (`layout`) and yields what
    each file became; `files` counts the files each worker (node, process) segmented."""

    def __init__(self, workers: int | None = None):
        self.workers = workers
        self.files: Counter[tuple[str, int]] = Counter()

    def __call__(self, model_dir: Path, source: Location, names: list[str], max_image_pixels: int, flips: bool,
                 overlays: bool) -> Iterator[Segmented]:
        import ray
        import ray.data

        quiet_ray_data()  # and without its progress bars: predict's own bar counts the images
        ray.data.DataContext.get_current().wait_for_min_actors_s = WORKERS_START_S
        node_cpus = [node["Resources"]["CPU"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU")]
        plan = layout(self.workers, node_cpus, ray.cluster_resources().get("GPU", 0), cpu_forced())
        model_files = {path.name: path.read_bytes() for path in Path(model_dir).iterdir() if path.is_file()}
        tasks = min(len(names), max(TASKS_PER_WORKER * plan.workers, -(-len(names) // FILES_PER_TASK)))
        dataset = ray.data.from_items([{"name": name} for name in names], override_num_blocks=tasks)
        segmented = dataset.map_batches(
            SegmentFiles, batch_size=None, compute=ray.data.ActorPoolStrategy(size=plan.workers),
            num_cpus=plan.threads, num_gpus=plan.gpus,
            fn_constructor_kwargs={"model_files": model_files, "source": source, "threads": plan.threads,
                                   "max_image_pixels": max_image_pixels, "flips": flips, "overlays": overlays})
        for row in segmented.iter_rows():
            self.files[row["node"], row["pid"]] += 1
            yield Segmented(row["name"], row["mask"], row["overlay"], row["error"])
