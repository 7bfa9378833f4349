"""MLflow helpers. Runs are created by the stage drivers; workers only log into a given run id,
so a training job never opens a second run for itself."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def tracking_uri(project_root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, otherwise the sqlite store at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(project_root / DEFAULT_DB).resolve()}"


def experiment_id(client: MlflowClient, name: str, project_root: Path) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if client.tracking_uri.startswith("sqlite:"):
        # Keep artifacts beside the local store, wherever the process creating the experiment runs.
        artifacts = (project_root / DEFAULT_ARTIFACTS).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{'train': {'lr_g': 0.1}} -> {'train.lr_g': '0.1'}; lists and None become strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)[:6000]
    return flat


def create_run(
    client: MlflowClient,
    experiment: str,
    project_root: Path,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> str:
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, experiment, project_root), run_name=run_name, tags=all_tags)
    if params:
        log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, v) for k, v in flatten(params).items()]
    for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    kept = [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(v)
    ]
    client.log_batch(run_id, metrics=kept)


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
