import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from pipeline.tracking.provenance import (
    DATA_HASH_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    dvc_dir_md5,
    git_tags,
    run_tags,
)
from tests.conftest import prepare_dataset


def dvc_add_hash(root: Path, folder: str) -> str:
    """The hash `dvc add` records for `folder`, in a fresh DVC repository made at `root`."""
    env = os.environ | {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache")}
    for args in (["init", "--no-scm", "-q"], ["add", "--no-commit", "-q", folder]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, check=True, capture_output=True)
    return yaml.safe_load((root / f"{folder}.dvc").read_text())["outs"][0]["md5"]


def test_data_hash_is_the_one_dvc_records(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a.npy", np.arange(10))
    (folder / "sub" / "b.csv").write_text("x,y\n1,2\n")
    (folder / "stats.json").write_text("{}")
    files = sorted(tmp_path.rglob("*"))
    before = dvc_dir_md5(folder)  # outside any DVC repository
    assert sorted(tmp_path.rglob("*")) == files  # and no cache written
    assert before.endswith(".dir") and before == dvc_add_hash(tmp_path, "data")
    (folder / "sub" / "b.csv").write_text("x,y\n1,3\n")
    assert dvc_dir_md5(folder) != before


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
    assert tags[DATA_HASH_TAG] == dvc_add_hash(tmp_path, tiny_params.data.output_dir)
