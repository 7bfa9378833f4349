"""Where a run came from: the code (git commit, uncommitted changes) and the exact prepared data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ganseg.config import Params
from pipeline.workspace import dvc_experiment

GIT_COMMIT_TAG = "mlflow.source.git.commit"  # the tag MLflow's UI shows as the run's git commit
GIT_DIRTY_TAG = "ganseg.git_dirty"
DATA_HASH_TAG = "ganseg.data_md5"
DATASET_TAG = "ganseg.dataset"
DATA_PATH_TAG = "ganseg.data_path"
STAGE_TAG = "ganseg.stage"
DVC_EXPERIMENT_TAG = "ganseg.dvc_experiment"
SUBMITTED_COMMIT, SUBMITTED_DIRTY = "GANSEG_GIT_COMMIT", "GANSEG_GIT_DIRTY"


def _git(project_root: Path, *args: str) -> str | None:
    """git's stdout, or None where git is missing, this is not a repository, or it has no commit yet."""
    try:
        done = subprocess.run(["git", *args], cwd=project_root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_tags(project_root: Path) -> dict[str, str]:
    """The commit and dirty flag of the checkout: the submitting side's, when `ganseg submit` carried
    them to the cluster (GANSEG_GIT_COMMIT, GANSEG_GIT_DIRTY), else those of `project_root`."""
    if os.environ.get(SUBMITTED_COMMIT):
        return {GIT_COMMIT_TAG: os.environ[SUBMITTED_COMMIT], GIT_DIRTY_TAG: os.environ.get(SUBMITTED_DIRTY, "unknown")}
    commit = _git(project_root, "rev-parse", "HEAD")
    if commit is None:
        return {"ganseg.git": "no git commit (not a git repository, or git is missing)"}
    changes = _git(project_root, "status", "--porcelain")
    tags = {GIT_COMMIT_TAG: commit}
    if changes is not None:
        tags[GIT_DIRTY_TAG] = "true" if changes else "false"
    return tags


def dvc_dir_md5(folder: Path) -> str:
    """The hash DVC records for a directory output in dvc.lock ('<md5>.dir'), found by DVC's own code
    (as for an output with `cache: false`), outside any DVC repository and without writing a cache."""
    # DVC's own packages, loaded only where a hash is taken
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem, MemoryFileSystem

    fs = LocalFileSystem()
    _, _, tree = build(HashFileDB(MemoryFileSystem(), "ganseg"), str(folder), fs, "md5", dry_run=True)
    return tree.hash_info.value


def dataset_name(source: str) -> str:
    return Path(source).expanduser().resolve().name


def run_tags(project_root: Path, params: Params, stage: str) -> dict[str, str]:
    """Tags every run of a stage gets: stage, dataset, prepared-data hash, git commit and dirty flag."""
    data_dir = project_root / params.data.output_dir
    tags = {STAGE_TAG: stage, DATASET_TAG: dataset_name(params.data.source), DATA_PATH_TAG: params.data.output_dir}
    if data_dir.is_dir():
        tags[DATA_HASH_TAG] = dvc_dir_md5(data_dir)
    experiment = dvc_experiment()
    if experiment:
        tags[DVC_EXPERIMENT_TAG] = experiment
    return tags | git_tags(project_root)
