"""dvc.yaml reruns exactly what changed: each stage depends on the files its code runs, the data it
reads and the params keys that change what it writes, and on nothing else.

The graph is checked with real DVC in a throw-away project: the first two stages run for real (on a
data folder outside the project), the outputs of the later ones are stand-ins recorded with
`dvc commit`, and `dvc status` then names the stages each kind of change reaches.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.code_deps import PACKAGES, as_deps, expand, stage_code
from tests.conftest import ROOT
from tests.e2e import TINY, clean_env, copy_project, run

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
# Keys that change no stage's output: where its checkpoints go and how failures are handled, MLflow's
# names and images, the prepared folder's own path (a dvc.yaml output) and whether prepare uses Ray Data.
NO_STAGE_DEPENDS_ON = ("runtime", "mlflow", "data.output_dir", "data.ray_data")


def _module(stage: str) -> str:
    return STAGES[stage]["cmd"].split()[1].replace("-", "_")


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_of_each_stage_are_the_files_its_imports_run(stage):
    listed = [dep for dep in STAGES[stage]["deps"] if dep.split("/")[0] in PACKAGES]
    needed = stage_code(_module(stage))
    fix = "\n".join(f"      - {dep}" for dep in as_deps(needed))
    assert expand(listed) == needed, f"dvc.yaml, stage {stage}: its code deps should be\n{fix}"


def _leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{name}.") if isinstance(value, dict) and value else [name]
    return keys


def _covers(listed: str, key: str) -> bool:
    return key == listed or key.startswith(f"{listed}.")


def test_every_params_key_is_a_dependency_of_some_stage_unless_it_changes_no_output():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    listed = [key for stage in STAGES.values() for key in stage.get("params", [])]
    unused = [key for key in _leaf_keys(params)
              if not any(_covers(name, key) for name in listed + list(NO_STAGE_DEPENDS_ON))]
    assert not unused, f"params.yaml keys no stage lists: {unused}"
    operational = [key for key in listed
                   if any(_covers(name, key) or _covers(key, name) for name in NO_STAGE_DEPENDS_ON)]
    assert not operational, f"stages depend on keys that change no output: {operational}"


def test_the_tune_stage_does_not_depend_on_what_each_trial_overrides():
    tune = STAGES["tune"]["params"]
    assert not any(_covers(key, "train.epochs") or _covers(key, "train.num_workers") for key in tune)
    assert "train.epochs" in STAGES["train"]["params"]


# Stand-ins for the outputs of the stages after prepare: `dvc commit` records them as they are.
STAND_INS = {
    "results/tune/best_config.json": "{}", "models/model.json": "{}", "results/train_history.csv": "epoch\n",
    "results/evaluation/metrics.json": "{}", "results/evaluation/per_class.csv": "class,iou\n",
    "results/evaluation/overlays/a.png": "", "results/evaluation/confusion_matrix.png": "",
    "results/evaluation/per_class_iou.png": "", "image_generator/imagegen.json": "{}",
    "results/imagegen_history.csv": "epoch\n", "results/imagegen/metrics.json": "{}",
    "results/imagegen/samples.png": "", "models_synthetic/README.txt": "", "results/synthetic/metrics.json": "{}",
}


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["dvc", *args], repo, clean_env())


def _changed_stages(repo: Path) -> set[str]:
    return set(json.loads(_dvc(repo, "status", "--json").stdout))


def _set_param(repo: Path, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    section = params
    *path, last = key.split(".")
    for name in path:
        section = section.setdefault(name, {})
    section[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A project whose data.source is a folder outside it (with its split file), every stage recorded
    in dvc.lock; yields the project, the data folder and a function that undoes every change."""
    base = tmp_path_factory.mktemp("dvc-graph")
    source = base / "elsewhere" / "cells"
    for sub in ("images", "masks"):
        (source / sub).mkdir(parents=True)
    rows = ["stem,split"]
    for index in range(12):
        image = np.random.default_rng(index).integers(0, 255, (24, 24), dtype=np.uint8)
        Image.fromarray(image).save(source / "images" / f"c{index:02d}.png")
        Image.fromarray((image > 128).astype(np.uint8)).save(source / "masks" / f"c{index:02d}.png")
        rows.append(f"c{index:02d},{('train', 'val', 'test')[index % 3]}")
    (source / "split.csv").write_text("\n".join(rows) + "\n")
    repo = copy_project(base / "repo", TINY | {
        "data.source": str(source), "data.split_file": str(source / "split.csv"), "data.image_size": 16,
        "data.class_names": ["background", "cell"],
    })
    env = clean_env()
    for stage in ("synthesize", "prepare"):
        run(["dvc", "repro", "--single-item", stage], repo, env)
    for name, text in STAND_INS.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _dvc(repo, "commit", "--force")
    pristine = {path: path.read_bytes() for path in [repo / "params.yaml", *source.rglob("*"), *repo.glob("*/*.py")]
                if path.is_file()}

    def restore():
        for path, data in pristine.items():
            path.write_bytes(data)

    yield repo, source, restore
    restore()


def test_nothing_changed_nothing_to_do(recorded):
    repo, _, _ = recorded
    assert _changed_stages(repo) == set()


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_an_edited_added_or_removed_image_of_a_folder_outside_the_project_reruns_prepare(recorded, change):
    repo, source, restore = recorded
    try:
        image = source / "images" / "c03.png"
        if change == "edit":
            Image.fromarray(np.zeros((24, 24), np.uint8)).save(image)
        elif change == "add":
            Image.fromarray(np.zeros((24, 24), np.uint8)).save(source / "images" / "new.png")
        else:
            image.unlink()
        assert _changed_stages(repo) == {"prepare"}
    finally:
        (source / "images" / "new.png").unlink(missing_ok=True)
        restore()


def test_an_edited_split_file_reruns_prepare(recorded):
    repo, source, restore = recorded
    try:
        (source / "split.csv").write_text((source / "split.csv").read_text().replace("c03,train", "c03,test"))
        assert _changed_stages(repo) == {"prepare"}
    finally:
        restore()


@pytest.mark.parametrize(("key", "value", "stages"), [
    ("train.epochs", 3, {"train", "train_synthetic"}),
    ("train.lr_g", 0.001, {"tune", "train", "train_synthetic"}),
    ("runtime.storage_path", "elsewhere/ray", set()),
    ("mlflow.experiment", "other", set()),
    ("data.synthetic.num_images", 41, {"synthesize"}),
    ("evaluate.flip_tta", False, {"evaluate", "train_synthetic"}),
])
def test_a_params_change_reruns_the_stages_whose_output_it_changes(recorded, key, value, stages):
    repo, _, restore = recorded
    try:
        _set_param(repo, key, value)
        assert _changed_stages(repo) == stages
    finally:
        restore()


def test_an_edited_module_reruns_exactly_the_stages_whose_code_imports_it(recorded):
    repo, _, restore = recorded
    importers = {stage for stage in STAGES if "ganseg/viz.py" in stage_code(_module(stage))}
    assert importers and not importers & {"synthesize", "prepare"}
    try:
        with (repo / "ganseg" / "viz.py").open("a") as module:
            module.write("\n# edited\n")
        assert _changed_stages(repo) == importers
    finally:
        restore()


def test_the_committed_lock_records_the_code_and_params_of_today():
    """dvc.lock is DVC's record of what produced the committed results: after a change to the code or
    params a stage reads, `dvc repro` (and a commit of dvc.lock with the new results) is due."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    status = json.loads(_dvc(ROOT, "status", "--json").stdout)
    stale = {stage: entry for stage, entries in status.items() for entry in entries
             if isinstance(entry, dict) and ("changed deps" in entry or "modified params" in entry)
             and _code_or_params(entry)}
    assert not stale, f"dvc.lock is older than the code or params of these stages: run `dvc repro`: {stale}"


def _code_or_params(entry: dict) -> bool:
    changed = entry.get("changed deps", {}) | entry.get("modified params", {})
    return any(path.split("/")[0] in PACKAGES or path.endswith("params.yaml") or isinstance(what, dict)
               for path, what in changed.items())


def test_the_metrics_and_plots_files_are_committed_beside_the_lock():
    small = [path for stage in STAGES.values() for kind in ("metrics", "plots") for item in stage.get(kind, [])
             for path in item]
    assert small
    tracked = run(["git", "ls-files", "dvc.lock", *small], ROOT, clean_env()).stdout.split()
    assert sorted(tracked) == sorted(["dvc.lock", *small])
