"""prepare streams: tiles are saved in chunks as they come and joined into one array per split."""

import numpy as np

import ganseg.data.writers
from ganseg.data.writers import join_npy
from tests.conftest import prepare_dataset


def test_joined_chunks_equal_the_concatenated_arrays_and_are_removed(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (n, 2, 3, 3), dtype=np.uint8) for n in (4, 1, 7)]
    parts = []
    for i, array in enumerate(arrays):
        np.save(tmp_path / f"part{i}.npy", array)
        parts.append(tmp_path / f"part{i}.npy")
    join_npy(parts, tmp_path / "joined.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "joined.npy", mmap_mode="r"), np.concatenate(arrays))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.npy"]


def test_many_small_chunks_prepare_exactly_what_one_chunk_does(tmp_path, tiny_params, monkeypatch):
    whole = prepare_dataset(tiny_params.data, 1, tmp_path / "whole", progress=False)
    monkeypatch.setattr(ganseg.data.writers, "CHUNK_BYTES", 1)  # every tile its own chunk
    chunked = prepare_dataset(tiny_params.data, 1, tmp_path / "chunked", progress=False)
    assert chunked == whole
    for path in sorted((tmp_path / "whole").rglob("*")):
        if path.is_file():
            assert (tmp_path / "chunked" / path.relative_to(tmp_path / "whole")).read_bytes() == path.read_bytes(), path
    assert not any(p.name.startswith(".") for p in (tmp_path / "chunked").iterdir())


def test_ray_data_is_used_when_asked_for_a_cluster_or_much_image_data(tmp_path, monkeypatch):
    import os

    from ganseg.config import DataConfig
    from pipeline.stages.prepare import RAY_DATA_MIN_BYTES, uses_ray_data

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = tmp_path / "folder"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for name, size in (("a.png", RAY_DATA_MIN_BYTES // 2), ("b.png", RAY_DATA_MIN_BYTES // 2 - 1)):
        (folder / "images" / name).touch()
        os.truncate(folder / "images" / name, size)  # sparse: takes no disk space
    small = DataConfig(source=str(folder))
    assert not uses_ray_data(DataConfig(), tmp_path)  # the built-in data, small
    assert not uses_ray_data(small, tmp_path)
    assert uses_ray_data(small.model_copy(update={"ray_data": True}), tmp_path)
    os.truncate(folder / "images" / "b.png", RAY_DATA_MIN_BYTES // 2)
    assert uses_ray_data(small, tmp_path) == (len(os.sched_getaffinity(0)) > 1)
    assert not uses_ray_data(small.model_copy(update={"ray_data": False}), tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert uses_ray_data(DataConfig(), tmp_path)


def test_blocks_and_their_results_cross_processes_as_json(tmp_path, tiny_params):
    import json

    from ganseg.data.blocks import BlockResult, BlockTask, Pair, prepare_block
    from ganseg.data.intensity import IntensityRule
    from ganseg.data.synthetic import stem, write_synthetic_dataset
    from ganseg.data.writers import make_folders

    make_folders(tmp_path)
    source = write_synthetic_dataset(tiny_params.data.synthetic.model_copy(update={"num_images": 4}), 1,
                                     tmp_path / "source", progress=False)
    pairs = [Pair(stem(i), split, source / "images" / f"{stem(i)}.png", source / "masks" / f"{stem(i)}.png")
             for i, split in enumerate(["train", "val", "test", "train"])]
    task = BlockTask(3, pairs, tiny_params.data, 1, IntensityRule("image_percentiles", percentiles=(2.0, 98.0)), tmp_path)
    assert BlockTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    folder_task = BlockTask(0, [Pair("a", "val", tmp_path / "i.png", tmp_path / "m.png")], tiny_params.data, 1,
                            IntensityRule(), tmp_path)
    assert BlockTask.from_dict(json.loads(json.dumps(folder_task.to_dict()))) == folder_task
    result = prepare_block(task)
    again = BlockResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == result.to_dict() and again.test_stems == ["synth_00002"]
    assert again.parts["train"].class_pixels.dtype == np.int64
