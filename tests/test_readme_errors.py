"""The table of docs/troubleshooting.md ("When something goes wrong") quotes what `ganseg` prints.

Each row's case is brought about for real and run through the command line; every code span in
the row's right-hand column must appear in what was printed, `...` and `<...>` matching any text.
"""

import contextlib
import io
import re
import shutil
import struct
import zlib
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from ganseg.config import Params, load_params
from ganseg.contracts import read_dataset_stats
from ganseg.jobs.segmenter import SegmenterJob
from ganseg.segmenter.training import build_networks
from pipeline.cli import main
from pipeline.storage import location
from pipeline.tracking.lifecycle import RUN_KEY_TAG, run_key
from pipeline.training import check_checkpoints_fit
from tests.conftest import ROOT, model_card, prepare_dataset, write_pair
from tests.test_bad_data import grey, png_bytes
from tests.test_checkpoints import CodeOnLoad, export

TROUBLESHOOTING = (ROOT / "docs" / "troubleshooting.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def readme_table() -> dict[str, list[str]]:
    """{case: the code spans of its 'what you see' cell}."""
    section = TROUBLESHOOTING.split("# When something goes wrong\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]  # after header and rule
    return {case: re.findall(r"`([^`]+)`", seen) for case, seen in (row.strip("| ").split(" | ") for row in rows)}


def shown(quote: str, printed: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in re.split(r"\.\.\.|<[^<>]+>", quote))
    return re.search(pattern, printed, re.DOTALL) is not None


def assert_quoted(case: str, printed: str) -> None:
    (quotes,) = [quotes for row, quotes in readme_table().items() if row.startswith(case)]
    assert quotes
    for quote in quotes:
        assert shown(quote, printed), f"docs/troubleshooting.md quotes {quote!r}, but ganseg printed:\n{printed}"


def ganseg(*args) -> str:
    """What a `ganseg` command printed to stderr; it must stop with its error line, exit status 2."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        status = main([str(arg) for arg in args])
    assert status == 2 and "Traceback" not in printed.getvalue(), printed.getvalue()
    assert f"ganseg {args[0]}: error: " in printed.getvalue()
    return printed.getvalue()


def params_file(folder: Path, raw: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def prepare_folder(tmp_path: Path, folder: Path, **data) -> str:
    """`ganseg prepare` of a dataset folder of two classes."""
    raw = {"source": str(folder), "image_size": 16, "class_names": ["a", "b"], "output_dir": str(tmp_path / "out")}
    return ganseg("prepare", "--params", params_file(tmp_path, {"data": raw | data}))


def empty_mask(shape=(20, 24)):
    return np.zeros(shape, np.uint8)


def bad_params(tmp_path):
    return ganseg("prepare", "--params", params_file(tmp_path, {"train": {"lr_g": -0.001, "learning_rate": 0.001}}))


def indivisible_image_size(tmp_path):
    return ganseg("prepare", "--params", params_file(tmp_path, {"data": {"image_size": 72}, "model": {"depth": 4}}))


def rung_after_the_last_epoch(tmp_path):
    """The default warm-up (2) and a grace period of 2 in trials of 3 epochs: refused before Ray starts."""
    return ganseg("tune", "--params", params_file(tmp_path, {"tune": {"epochs": 3, "grace_period": 2}}))


def unusable_source_folder(tmp_path):
    folder = tmp_path / "ds"
    printed = prepare_folder(tmp_path, folder, on_error="skip")  # no folder
    (folder / "images").mkdir(parents=True)
    printed += prepare_folder(tmp_path, folder, on_error="skip")  # no masks/
    (folder / "masks").mkdir()
    return printed + prepare_folder(tmp_path, folder, on_error="skip")  # both empty


def unreadable_files(tmp_path):
    folder = tmp_path / "ds"
    write_pair(folder, "a", grey((20, 24)), empty_mask())
    write_pair(folder, "b", grey((20, 24)), empty_mask())
    (folder / "images" / "a.png").write_bytes(png_bytes(grey((20, 24)))[:200])
    (folder / "images" / "b.png").write_text("not a picture")
    (folder / "images" / "notes.txt").write_text("scanned on Monday")
    return prepare_folder(tmp_path, folder)


def image_without_mask(tmp_path):
    write_pair(tmp_path / "ds", "s", grey((20, 24)), empty_mask())
    Image.fromarray(grey((20, 24))).save(tmp_path / "ds" / "images" / "a.png")
    return prepare_folder(tmp_path, tmp_path / "ds")


def one_stem_twice(tmp_path):
    write_pair(tmp_path / "ds", "a", grey((20, 24)), empty_mask())
    Image.fromarray(grey((20, 24))).save(tmp_path / "ds" / "images" / "a.tif")
    return prepare_folder(tmp_path, tmp_path / "ds")


def sizes_differ(tmp_path):
    write_pair(tmp_path / "ds", "a", grey((480, 640)), empty_mask((240, 320)))
    return prepare_folder(tmp_path, tmp_path / "ds")


def mask_values_and_colours(tmp_path):
    write_pair(tmp_path / "ids", "a", grey((20, 24)), np.full((20, 24), 7, np.uint8))
    colours = np.zeros((20, 24, 3), np.uint8)
    colours[3, 4] = (0, 200, 0)
    write_pair(tmp_path / "rgb", "a", grey((20, 24)), colours)
    palette = {"0,0,0": 0, "255,0,0": 1}
    return prepare_folder(tmp_path, tmp_path / "ids") + prepare_folder(
        tmp_path, tmp_path / "rgb", mask_format="rgb", palette=palette
    )


def split_file_problems(tmp_path):
    for i in range(10):
        write_pair(tmp_path / "ds", f"img{i}", grey((20, 24)), empty_mask())
    rows = {
        "unknown": [f"img{i},{'train' if i < 8 else 'test'}" for i in range(10)] + ["ghost,train"],
        "unlisted": [f"img{i},{'train' if i < 8 else 'test'}" for i in range(9)],
        "no test": [f"img{i},train" for i in range(10)],
    }
    printed = ""
    for lines in rows.values():
        Path("ds/split.csv").write_text("stem,split\n" + "\n".join(lines) + "\n")
        printed += prepare_folder(tmp_path, tmp_path / "ds", split_file="ds/split.csv")
    shutil.move("ds/split.csv", "split.csv")  # outside the data folder, which DVC watches
    return printed + prepare_folder(tmp_path, tmp_path / "ds", split_file="split.csv")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def over_pixel_limit(tmp_path):
    """A PNG whose header claims 30000 x 30000 pixels (a decompression bomb, without the pixels)."""
    write_pair(tmp_path / "ds", "a", grey((20, 24)), empty_mask())
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
    (tmp_path / "ds" / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IEND", b""))
    return prepare_folder(tmp_path, tmp_path / "ds")


def symlink_out_of_the_folder(tmp_path):
    write_pair(tmp_path / "elsewhere", "a", grey((20, 24)), empty_mask())
    write_pair(tmp_path / "ds", "a", grey((20, 24)), empty_mask())
    (tmp_path / "ds" / "images" / "a.png").unlink()
    (tmp_path / "ds" / "images" / "a.png").symlink_to(tmp_path / "elsewhere" / "images" / "a.png")
    return prepare_folder(tmp_path, tmp_path / "ds")


def predict_with_models_folder(tmp_path):
    """`ganseg predict --model models` in tmp_path, the current folder."""
    (tmp_path / "in").mkdir(exist_ok=True)
    return ganseg("predict", "--model", "models", "--input", "in", "--output", "out")


def model_of_another_architecture(tmp_path):
    export(tmp_path / "models", Params())
    wider, _ = build_networks(Params().with_overrides({"model.base_channels": 32}), 1, 3)
    torch.save(wider.state_dict(), tmp_path / "models" / "segmenter.pt")
    return predict_with_models_folder(tmp_path)


def damaged_or_pickled_weights(tmp_path):
    export(tmp_path / "models", Params())
    (tmp_path / "models" / "segmenter.pt").write_bytes(b"just some bytes")
    printed = predict_with_models_folder(tmp_path)
    torch.save({"head.weight": CodeOnLoad(tmp_path / "code_ran")}, tmp_path / "models" / "segmenter.pt")
    return printed + predict_with_models_folder(tmp_path)


def model_for_other_classes(tmp_path):
    params = Params().with_overrides({"data.image_size": 32, "data.synthetic": {"num_images": 30, "size": 32},
                                      "data.output_dir": str(tmp_path / "data" / "prepared")})
    prepare_dataset(params.data, 0, tmp_path / "data" / "prepared", progress=False)
    export(tmp_path / "models", params, model_card(params, class_names=("x", "y")))
    return ganseg("evaluate", "--params", params_file(tmp_path, params.model_dump()), "--root", tmp_path)


def sqlite_with_a_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSEG_STORE", str(tmp_path / "bucket"))  # a folder stands in for a bucket
    return ganseg("tune", "--params", params_file(tmp_path, {}), "--root", tmp_path)


def credentials_in_a_storage_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSEG_STORE", "s3://ganseg/project?access_key=AKIAEXAMPLE&secret_key=s3cr3t")
    printed = ganseg("synthesize", "--root", tmp_path)
    assert "s3cr3t" not in printed and "AKIAEXAMPLE" not in printed
    return printed


CASES = {  # the start of a row's case: how to bring it about, returning what ganseg printed
    "unknown key, wrong type or bad value": bad_params,
    "`data.image_size` that the U-Net depth cannot divide": indivisible_image_size,
    "`tune.grace_period` that puts ASHA's first comparison after": rung_after_the_last_epoch,
    "`data.source` not a folder": unusable_source_folder,
    "damaged or truncated image": unreadable_files,
    "image without a mask": image_without_mask,
    "two files with one stem": one_stem_twice,
    "image and mask of different sizes": sizes_differ,
    "mask value outside the class map": mask_values_and_colours,
    "`data.split_file` missing": split_file_problems,
    "image over `data.max_image_pixels`": over_pixel_limit,
    "symlink pointing out of the dataset folder": symlink_out_of_the_folder,
    "model folder of another architecture": model_of_another_architecture,
    "damaged weights file": damaged_or_pickled_weights,
    "model trained for other classes": model_for_other_classes,
    "MLflow's local store with `GANSEG_STORE`": sqlite_with_a_store,
    "credentials in `GANSEG_STORE`": credentials_in_a_storage_uri,
}
NEEDS_MONKEYPATCH = {sqlite_with_a_store, credentials_in_a_storage_uri}


@pytest.mark.parametrize("case", [pytest.param(case, id=make.__name__) for case, make in CASES.items()])
def test_ganseg_prints_what_the_readme_quotes(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make = CASES[case]
    assert_quoted(case, make(tmp_path, monkeypatch) if make in NEEDS_MONKEYPATCH else make(tmp_path))


def test_the_configuration_example_is_what_ganseg_prints(tmp_path, monkeypatch):
    example = CONFIGURATION.split("naming the key, e.g.\n\n```\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path)
    assert ganseg("train", "--set", "train.lr_g=-0.001", "--set", "train.learning_rate=0.001") == example


# On a real Ray runtime: a training whose loss diverges in epoch 2 leaves a failed run with the
# checkpoint of epoch 1, which a later run resumes.
DIVERGING = ["train.lr_g=1e30", "train.lambda_adv=0", "train.epochs=3", "train.batch_size=64", "runtime.max_failures=0"]


class Project:
    """A project folder with tiny prepared data; `ganseg` runs on this module's Ray runtime."""

    def __init__(self, root: Path):
        self.root = root
        params = Params.model_validate({
            "data": {"image_size": 32, "synthetic": {"num_images": 30, "size": 32}},
            "model": {"base_channels": 8, "depth": 2, "disc_channels": 8, "disc_layers": 2},
            "train": {"num_workers": 1, "adv_warmup_epochs": 0},
        })
        params_file(root, params.model_dump())
        prepare_dataset(params.data, 0, root / params.data.output_dir, progress=False)

    def ganseg(self, stage: str, *settings: str) -> str:
        overrides = [arg for setting in settings for arg in ("--set", setting)]
        return ganseg(stage, "--params", self.root / "params.yaml", "--root", self.root, *overrides)

    @cached_property
    def diverged(self) -> str:
        """What the diverging training printed (it runs once)."""
        return self.ganseg("train", *DIVERGING)

    @property
    def mlflow(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.root / 'mlflow.db'}")

    def train_run(self):
        """The one train run (the diverged one, resumed or not)."""
        experiment = self.mlflow.get_experiment_by_name("ganseg")
        (run,) = self.mlflow.search_runs([experiment.experiment_id], filter_string="tags.`ganseg.stage` = 'train'")
        return run


@pytest.fixture(scope="module")
def project(two_cpu_ray, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield Project(tmp_path_factory.mktemp("project"))


def too_many_workers(project):
    return (project.ganseg("train", "train.num_workers=4") + project.ganseg("tune", "tune.workers_per_trial=4")
            + project.ganseg("train", "train.use_gpu=true"))


def fp16_on_cpus(project):
    search = "tune.search_space={train.precision: {type: choice, values: [fp32, fp16]}}"
    return project.ganseg("train", "train.precision=fp16") + project.ganseg("tune", search)


def checkpoint_of_another_architecture(project):
    """Resume the diverged (FAILED) run with wider networks, as if the code that builds them had changed."""
    project.diverged
    wider = [*DIVERGING, "model.base_channels=16", "runtime.resume_failed=true"]
    params = load_params(project.root / "params.yaml", wider)
    stats = read_dataset_stats(project.root / "data/prepared")
    project.mlflow.set_tag(project.train_run().info.run_id, RUN_KEY_TAG, run_key(params, stats))
    return project.ganseg("train", *wider)


def non_finite_loss(project):
    return project.diverged


ON_A_CLUSTER = {
    "more Ray workers or GPUs than the cluster has": too_many_workers,
    "`fp16` on CPU workers": fp16_on_cpus,
    "a Ray checkpoint of another architecture": checkpoint_of_another_architecture,
    "NaN or infinite loss": non_finite_loss,
}


@pytest.mark.integration
@pytest.mark.parametrize("case", [pytest.param(case, id=make.__name__) for case, make in ON_A_CLUSTER.items()])
def test_ganseg_on_a_real_cluster_prints_what_the_readme_quotes(case, project):
    assert_quoted(case, ON_A_CLUSTER[case](project))


@pytest.mark.integration
def test_a_checkpoint_of_another_architecture_is_refused_before_the_workers_start(project):
    printed = checkpoint_of_another_architecture(project)
    run = project.train_run()
    run_dir = project.root / "runs" / "ray" / f"train-{run.info.run_id}"
    assert f"{run_dir}/checkpoint_" in printed and "state.pt: the segmenter weights are for another architecture" in printed
    assert "--set runtime.resume=false starts afresh" in printed
    assert len(list(run_dir.glob("checkpoint_*/state.pt"))) == 1  # epoch 1's, as the diverged run left it
    assert run.info.status == "FAILED" and not (project.root / "models").exists()


@pytest.mark.integration
def test_the_checkpoint_passes_the_check_with_the_params_that_wrote_it(project):
    project.diverged
    run_dir = project.root / "runs" / "ray" / f"train-{project.train_run().info.run_id}"
    assert list(run_dir.glob("checkpoint_*/state.pt"))
    params = load_params(project.root / "params.yaml", DIVERGING)
    check_checkpoints_fit(location(run_dir), SegmenterJob(params, project.root / "data" / "prepared").fresh_state)


def test_every_row_of_the_table_is_reproduced():
    rows = readme_table()
    cases = [*CASES, *ON_A_CLUSTER]
    assert [sum(row.startswith(case) for case in cases) for row in rows] == [1] * len(rows), list(rows)
    assert len(rows) == len(cases)
