"""A failure in the middle of any stage's write leaves the previous outputs as they were, and no temp files."""

import os

import numpy as np
import pytest
from PIL import Image

import ganseg.contracts
import ganseg.data.prepare
import ganseg.fileio
import ganseg.segmenter.evaluation
import ganseg.segmenter.segment_folder
from ganseg.contracts import ModelCard, read_dataset_stats
from ganseg.fileio import atomic_dir, write_json
from ganseg.jobs.segmenter import SegmenterJob
from ganseg.segmenter.export import export_model
from ganseg.segmenter.training import build_networks
from pipeline.stages import evaluate
from pipeline.training import export
from tests.conftest import model_card, predict_in_process, prepare_dataset


class InjectedFailure(Exception):
    pass


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden_leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fail_on_call(number, real):
    """`real`, except that call `number` (1-based) raises: the write stops half way."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise InjectedFailure(f"injected at call {number}")
        return real(*args, **kwargs)

    return wrapper


def test_prepare_failing_after_its_first_file(tmp_path, tiny_params, monkeypatch):
    out = tmp_path / "prep"
    prepare_dataset(tiny_params.data, 1, out, progress=False)
    before = snapshot(out)
    monkeypatch.setattr(ganseg.data.prepare.np, "save", fail_on_call(2, np.save))
    with pytest.raises(InjectedFailure):
        prepare_dataset(tiny_params.data, 2, out, progress=False)
    assert snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []


def test_json_write_failing_half_way(tmp_path, monkeypatch):
    """The tune stage's best_config.json (and every JSON output) is written this way."""
    target = tmp_path / "best_config.json"
    write_json(target, {"overrides": {"train.lr_g": 0.001}})
    before = target.read_bytes()
    real_fdopen = os.fdopen

    def half_written(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        real_write = handle.write

        def write(text):
            real_write(text[: len(text) // 2])
            handle.flush()
            raise OSError(28, "No space left on device")

        handle.write = write
        return handle

    monkeypatch.setattr(ganseg.fileio.os, "fdopen", half_written)
    with pytest.raises(OSError, match="No space left"):
        write_json(target, {"overrides": {"train.lr_g": 0.5}, "padding": "x" * 1000})
    assert target.read_bytes() == before
    assert hidden_leftovers(tmp_path) == []


def exported_state(params, epoch):
    """The entries of a final checkpoint that the export reads."""
    segmenter, _ = build_networks(params.with_overrides({"seed": epoch}), 1, 3)
    history = [{"epoch": e, "val_miou": 0.1 * e} for e in range(1, epoch + 1)]
    best = {"epoch": epoch, "val_miou": 0.1 * epoch, "segmenter": segmenter.state_dict()}
    return {"epoch": epoch, "segmenter": best["segmenter"], "history": history, "best": best}


def test_train_export_failing_after_the_weights(tmp_path, tiny_params, monkeypatch):
    models, history = tmp_path / "models", tmp_path / "results" / "train_history.csv"
    prepare_dataset(tiny_params.data, 0, tmp_path / "data", progress=False)
    job = SegmenterJob(tiny_params, tmp_path / "data")
    state = exported_state(tiny_params, 2)
    export(job, state, state, "run-a", models, history)
    before_models, before_history = snapshot(models), history.read_bytes()
    monkeypatch.setattr(ganseg.contracts, "write_json", fail_on_call(1, ganseg.contracts.write_json))
    with pytest.raises(InjectedFailure):
        state = exported_state(tiny_params, 5)
        export(job, state, state, "run-b", models, history)
    assert snapshot(models) == before_models and history.read_bytes() == before_history
    assert hidden_leftovers(tmp_path) == [] and hidden_leftovers(history.parent) == []


def test_evaluate_failing_half_way_through_its_report(tmp_path, tiny_params, monkeypatch):
    params = tiny_params.with_overrides({"data.output_dir": "prep", "evaluate.num_overlays": 2})
    prepare_dataset(params.data, 0, tmp_path / "prep", progress=False)
    segmenter, _ = build_networks(params, 1, 3)
    card = ModelCard.for_data(params.model, read_dataset_stats(tmp_path / "prep"))
    export_model(tmp_path / "models", segmenter.state_dict(), card)
    out = tmp_path / "results" / "evaluation"
    evaluate.run(params, tmp_path, tmp_path / "models", out)
    before = snapshot(out)
    assert {"metrics.json", "per_class.csv", "overlays/test_000.png"} <= before.keys()
    bars = ganseg.segmenter.evaluation.save_per_class_bars
    monkeypatch.setattr(ganseg.segmenter.evaluation, "save_per_class_bars", fail_on_call(1, bars))
    with pytest.raises(InjectedFailure):
        evaluate.run(params, tmp_path, tmp_path / "models", out)
    assert snapshot(out) == before
    assert hidden_leftovers(out.parent) == []


def test_predict_failing_on_its_second_image(tmp_path, tiny_params, monkeypatch):
    generator, _ = build_networks(tiny_params, 1, 3)
    export_model(tmp_path / "model", generator.state_dict(), model_card(tiny_params))
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((16, 16), 100, np.uint8)).save(inputs / f"{name}.png")
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's earlier mask")
    (out / "notes.txt").write_text("not ours")
    before = snapshot(out)
    monkeypatch.setattr(ganseg.segmenter.segment_folder, "segment_image", fail_on_call(2, ganseg.segmenter.segment_folder.segment_image))
    with pytest.raises(InjectedFailure):
        predict_in_process(tmp_path / "model", inputs, out)
    assert snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []
    monkeypatch.undo()
    predict_in_process(tmp_path / "model", inputs, out)
    assert sorted(snapshot(out)) == ["a.png", "b.png", "c.png", "notes.txt"]


def test_atomic_dir_puts_the_previous_output_back_if_the_final_move_fails(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_dir(target) as staging:
        (staging / "old.txt").write_text("previous")
    real_rename = type(target).rename

    def rename(self, destination):
        if self.name.startswith(".out.") and not self.name.endswith(".old"):  # the staging folder
            raise InjectedFailure("rename failed")
        return real_rename(self, destination)

    monkeypatch.setattr(type(target), "rename", rename)
    with pytest.raises(InjectedFailure):
        with atomic_dir(target) as staging:
            (staging / "new.txt").write_text("new")
    assert snapshot(target) == {"old.txt": b"previous"}
    assert hidden_leftovers(tmp_path) == []
