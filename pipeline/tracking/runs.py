"""MLflow helpers. Runs are created by the stage drivers; workers only log into a given run id,
so a training job never opens a second run for itself."""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from ganseg.errors import GansegError
from pipeline.tracking.provenance import DATA_HASH_TAG, DATA_PATH_TAG, DATASET_TAG
from pipeline.workspace import stores_root

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
SERVER_COMMAND = (
    "mlflow server --host 127.0.0.1 --port 5000 --workers 1"
    " --backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts"
)
_UNSAFE_KEY_CHARS = re.compile(r"[^\w.\- :]")
# The experiment's type as MLflow's UI names it ("Machine learning", not a GenAI app). MLflow 3.17's UI
# still opens an experiment in the view its GenAI / Model training switch selects.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class TrackingServerError(GansegError, RuntimeError):
    """The MLflow tracking server in MLFLOW_TRACKING_URI cannot be used; the message says why."""


def tracking_uri(project_root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, otherwise the sqlite store at the project root (DVC's project, for
    an experiment run in a temporary copy: pipeline/workspace.py)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(stores_root(project_root) / DEFAULT_DB).resolve()}"


def point_mlflow_at(uri: str) -> None:
    """MLflow's module-level API (start_run, log_model, download_artifacts) uses the global tracking
    and registry URIs, whatever a call is passed (models:/ names resolve through the registry one)."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def require_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail at once, with a clear message, when an http(s) tracking URI does not answer as MLflow.

    MLflow's own client retries for minutes; a stage should not train first and fail later.
    """
    if not uri.startswith(("http://", "https://")):
        return
    probe = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    hint = f"start it with `{SERVER_COMMAND}`, or unset MLFLOW_TRACKING_URI to use the local store"
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s) as response:
            json.load(response)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # a server with authentication: MLflow's client brings the credentials
        raise TrackingServerError(
            f"the MLflow tracking server {uri} answered HTTP {err.code} to {probe}: is it an MLflow server?"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingServerError(f"cannot reach the MLflow tracking server {uri} ({reason}); {hint}") from None


def require_shared_store(uri: str, because: str) -> None:
    """Refuse a tracking store in local files (SQLite, a folder) where processes on other machines
    write runs: SQLite's locking is unreliable over a network filesystem, and a node's own disk is
    out of the others' reach."""
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        raise TrackingServerError(
            f"{because}, so runs are written from several machines: MLflow's local store {uri} cannot take them;"
            " set MLFLOW_TRACKING_URI to an MLflow server every node reaches (docs/cluster.md: the team set-up,"
            " `mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://...`)"
        )


def run_name(stage: str) -> str:
    """'train-20250101-120000': distinct, sortable names to tell runs apart in the UI."""
    return f"{stage}-{datetime.now():%Y%m%d-%H%M%S}"


def experiment_id(client: MlflowClient, name: str, project_root: Path) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        require_artifact_access(client, found.artifact_location, f"experiment {name!r}")
        if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    artifacts = None
    if client.tracking_uri.startswith("sqlite:"):
        # Keep artifacts beside the local store, wherever the process creating the experiment runs.
        artifacts = (stores_root(project_root) / DEFAULT_ARTIFACTS).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifacts, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})


def require_artifact_access(client: MlflowClient, location: str, owner: str) -> None:
    """Artifacts behind a server's proxy (mlflow-artifacts:) cannot be written without that server."""
    if location.startswith("mlflow-artifacts:") and not client.tracking_uri.startswith("http"):
        raise TrackingServerError(
            f"{owner} keeps its artifacts behind an MLflow server ({location}); start it "
            f"(`{SERVER_COMMAND}`) and set MLFLOW_TRACKING_URI=http://127.0.0.1:5000"
        )


def safe_key(name: str) -> str:
    """A valid MLflow param / metric / tag name: characters MLflow rejects (',', '+', '/', ...) become '_'."""
    return _UNSAFE_KEY_CHARS.sub("_", name)[:250]


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """{'train': {'lr_g': 0.1}} -> {'train.lr_g': '0.1'}; lists and None become strings.

    Keys are made valid MLflow names, so user-given keys (palette colours 'R,G,B') do not crash.
    """
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = safe_key(f"{prefix}{key}")
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
    all_tags = {safe_key(k): str(v) for k, v in tags.items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, experiment, project_root), run_name=run_name, tags=all_tags)
    if params:
        log_params(client, run.info.run_id, params)
    log_dataset_input(client, run.info.run_id, project_root, tags)
    return run.info.run_id


def log_dataset_input(client: MlflowClient, run_id: str, project_root: Path, tags: dict[str, str]) -> None:
    """The prepared data as the run's input (the UI's Dataset column): '<dataset>@<first 8 of its DVC md5>',
    the whole md5 as its digest. Nothing when the tags name no prepared data."""
    md5 = tags.get(DATA_HASH_TAG)
    if not md5:
        return
    source = json.dumps({"uri": str((project_root / tags[DATA_PATH_TAG]).resolve())})
    dataset = Dataset(name=f"{tags[DATASET_TAG]}@{md5[:8]}", digest=md5, source_type="local", source=source)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, "training")])])


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """The whole params tree, flattened; log_batch sends it in requests of at most 100 params."""
    client.log_batch(run_id, params=[Param(k, v) for k, v in flatten(params).items()])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    kept = [
        Metric(safe_key(k), float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(v)
    ]
    client.log_batch(run_id, metrics=kept)


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(safe_key(k), str(v)) for k, v in tags.items()])
