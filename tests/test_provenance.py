import subprocess
import tempfile
from pathlib import Path

import numpy as np
from dvc_data.hashfile.build import build
from dvc_data.hashfile.db import HashFileDB
from dvc_objects.fs.local import LocalFileSystem

from pipeline.provenance import DATA_HASH_TAG, GIT_COMMIT_TAG, GIT_DIRTY_TAG, dvc_dir_md5, git_tags, run_tags
from tests.conftest import prepare_dataset


def dvc_own_hash(folder: Path) -> str:
    fs = LocalFileSystem()
    _, _, obj = build(HashFileDB(fs, tempfile.mkdtemp()), str(folder), fs, "md5")
    return obj.hash_info.value


def test_data_hash_is_the_one_dvc_computes(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "a.npy", np.arange(10))
    (tmp_path / "sub" / "b.csv").write_text("x,y\n1,2\n")
    (tmp_path / "stats.json").write_text("{}")
    assert dvc_dir_md5(tmp_path) == dvc_own_hash(tmp_path)
    before = dvc_dir_md5(tmp_path)
    (tmp_path / "sub" / "b.csv").write_text("x,y\n1,3\n")
    assert dvc_dir_md5(tmp_path) != before


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    return subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_and_dirty_flag(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    clean = git_tags(tmp_path)
    assert clean == {GIT_COMMIT_TAG: git(tmp_path, "rev-parse", "HEAD"), GIT_DIRTY_TAG: "false"}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_tags(tmp_path)[GIT_DIRTY_TAG] == "true"


def test_not_a_git_repository_is_tolerated(tmp_path):
    tags = git_tags(tmp_path)
    assert GIT_COMMIT_TAG not in tags and "not a git repository" in tags["ganseg.git"]


def test_run_tags_name_stage_dataset_and_prepared_data(tmp_path, tiny_params):
    prepare_dataset(tiny_params.data, tiny_params.seed, tmp_path / tiny_params.data.output_dir, progress=False)
    tags = run_tags(tmp_path, tiny_params, "train")
    assert tags["ganseg.stage"] == "train" and tags["ganseg.dataset"] == "synthetic"
    assert tags[DATA_HASH_TAG] == dvc_own_hash(tmp_path / tiny_params.data.output_dir)
