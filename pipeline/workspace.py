"""Where a stage keeps the project's stores, and which DVC experiment it runs for.

`dvc exp run --queue` and `--temp` run the stages in a temporary copy of the project, without the
git-ignored local MLflow store (mlflow.db, mlartifacts/) and Ray's run folders (runs/). DVC names
the project it copied in DVC_ROOT (and sets it to the project itself under `dvc repro`), so the
stages keep using the project's stores: every experiment's runs land in one MLflow store, and a
rerun finds the checkpoints of its unfinished run.
"""

from __future__ import annotations

import os
from pathlib import Path

DVC_ROOT = "DVC_ROOT"
DVC_EXP_NAME = "DVC_EXP_NAME"
GANSEG_STORE = "GANSEG_STORE"


def stores_root(project_root: Path) -> Path:
    """The folder of the local MLflow store and of Ray's run folders: DVC's project, else `project_root`."""
    return Path(os.environ.get(DVC_ROOT) or project_root)


def dvc_experiment() -> str | None:
    """The name of the DVC experiment this stage runs for (`dvc exp run`), or None."""
    return os.environ.get(DVC_EXP_NAME) or None


def project_store():
    """The project's root on object storage (GANSEG_STORE, e.g. s3://bucket/project), or None when
    the project's bulk files stay in the project folder."""
    uri = os.environ.get(GANSEG_STORE)
    if not uri:
        return None
    from pipeline.storage import location

    return location(uri)
