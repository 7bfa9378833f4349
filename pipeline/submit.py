"""`ganseg submit STAGE [OPTIONS]`: run a stage as a Ray job (`ray job submit`) on the cluster in
RAY_ADDRESS, with this checkout as the job's working dir (what .gitignore and .rayignore leave:
the code, params.yaml, dvc.yaml), so every node runs the code submitted.

The job gets, as environment variables, where the project and MLflow are (the variables
pipeline/ray/cluster.py forwards: GANSEG_STORE, the S3 endpoint, MLFLOW_TRACKING_URI; never
credentials, which every node takes from its own environment) and this checkout's git commit and
dirty flag, which the job's MLflow runs are tagged with (pipeline/tracking/provenance.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ganseg.errors import GansegError
from pipeline.ray.cluster import FORWARDED_VARIABLES
from pipeline.tracking.provenance import (
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    SUBMITTED_COMMIT,
    SUBMITTED_DIRTY,
    git_tags,
)


def job_command(stage_args: list[str], project_root: Path) -> list[str]:
    """The `ray job submit` command line that runs `ganseg <stage_args>` on the cluster."""
    tags = git_tags(project_root)
    env_vars = {name: os.environ[name] for name in FORWARDED_VARIABLES if os.environ.get(name)}
    if GIT_COMMIT_TAG in tags:
        env_vars |= {SUBMITTED_COMMIT: tags[GIT_COMMIT_TAG], SUBMITTED_DIRTY: tags.get(GIT_DIRTY_TAG, "unknown")}
    return ["ray", "job", "submit", "--working-dir", str(project_root),
            "--runtime-env-json", json.dumps({"env_vars": env_vars}),
            "--", "python", "-m", "pipeline.cli", *stage_args]


def run(stage_args: list[str], project_root: Path) -> int:
    """Submit, follow the job's output, and return its exit status (that of `ray job submit`)."""
    if not os.environ.get("RAY_ADDRESS"):
        raise GansegError("ganseg submit needs RAY_ADDRESS, the cluster's dashboard address"
                          " (e.g. http://HEAD_NODE:8265)")
    if not stage_args:
        raise GansegError("ganseg submit needs the stage to run, e.g. ganseg submit train --set train.epochs=5")
    return subprocess.run(job_command(stage_args, project_root), stdout=sys.stdout, stderr=sys.stderr).returncode
