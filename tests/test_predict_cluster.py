"""`ganseg predict` on Ray Data workers (a private Ray runtime started by the command) writes the
same bytes as in one process: masks, overlays and the list of skipped files. The model is the
session's `dvc repro` champion folder; the object-storage version runs in test_object_storage.py."""

import os
import shutil

import pytest

from pipeline.prediction import image_names_at, uses_ray
from pipeline.ray.predict import Layout, layout
from pipeline.storage import location
from tests.e2e import run


@pytest.mark.integration
def test_two_ray_workers_write_the_bytes_one_process_writes(default_repro, three_images, tmp_path):
    """One process with as many threads as each worker has: oneDNN picks its kernels by thread count."""
    inputs = tmp_path / "in"
    shutil.copytree(three_images, inputs)
    (inputs / "broken.png").write_bytes(b"not an image")
    threads = layout(2, [len(os.sched_getaffinity(0))], 0, False).threads
    outputs = {}
    for workers in (0, 2):
        outputs[workers] = tmp_path / f"masks_{workers}"
        done = run(["ganseg", "predict", "--model", str(default_repro.repo / "models"), "--input", str(inputs),
                    "--output", str(outputs[workers]), "--overlays", "--ray-workers", str(workers)], tmp_path,
                   default_repro.own_store_env() | {"OMP_NUM_THREADS": str(threads)})
        assert "skipped broken.png: not an image that can be read" in done.stdout
    assert "Ray Data: 4 images on 2 worker(s), 1 node(s)" in done.stdout
    written = sorted(path.name for path in outputs[0].iterdir())
    assert written == ["a.png", "a_overlay.png", "b.png", "b_overlay.png", "c.png", "c_overlay.png"]
    assert sorted(path.name for path in outputs[2].iterdir()) == written
    assert [(outputs[2] / name).read_bytes() for name in written] == [(outputs[0] / name).read_bytes()
                                                                       for name in written]


@pytest.mark.parametrize("workers, address, expected", [
    (None, "", False),  # one machine: this process
    (None, "10.0.0.1:6379", True),  # inside a Ray job: the cluster's workers
    (None, "http://head:8265", False),  # beside `ganseg submit`: its dashboard, not a cluster to join
    (0, "10.0.0.1:6379", False),  # --ray-workers 0 keeps it here
    (2, "", True),  # --ray-workers 2 starts a local Ray
])
def test_predict_uses_ray_inside_a_ray_job_or_when_asked(monkeypatch, workers, address, expected):
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert uses_ray(workers) is expected


def test_the_input_listing_keeps_images_only_sorted(tmp_path):
    for name, size in {"b.png": 3, "a.TIF": 5, "notes.txt": 7}.items():
        (tmp_path / name).write_bytes(b"x" * size)
    (tmp_path / "sub.png").mkdir()
    assert image_names_at(location(tmp_path)) == ["a.TIF", "b.png"]


def test_the_input_listing_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        image_names_at(location(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match=r"holds no images \(.jpeg"):
        image_names_at(location(tmp_path))


@pytest.mark.parametrize("workers, node_cpus, gpus, cpu_only, expected", [
    (None, [2], 0, False, Layout(1, 2, 0)),  # one node: one worker with its threads, as one process
    (None, [1, 1], 0, False, Layout(2, 1, 0)),  # a worker a node
    (None, [8, 4], 0, False, Layout(2, 4, 0)),  # each fits the smallest node
    (None, [8, 8], 4, False, Layout(4, 4, 1)),  # a worker a GPU
    (None, [8, 8], 4, True, Layout(2, 8, 0)),  # --cpu: the GPUs left alone
    (2, [2], 0, False, Layout(2, 1, 0)),  # --ray-workers 2 share the CPUs
    (1, [1, 1], 0, False, Layout(1, 1, 0)),  # a worker's CPUs lie on one node
])
def test_the_workers_layout(workers, node_cpus, gpus, cpu_only, expected):
    assert layout(workers, node_cpus, gpus, cpu_only) == expected
