"""The MLflow run of a training stage from start to end: found again by its key when an earlier
attempt did not finish (runtime.resume), created otherwise, and ended FINISHED or FAILED."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

from ganseg.config import Params
from ganseg.contracts import DatasetStats
from pipeline.tracking import provenance, runs

RUN_KEY_TAG = "ganseg.run_key"


def run_key(params: Params, stats: DatasetStats, *more) -> str:
    """A fingerprint of what determines the result: the params (less the runtime section: where
    checkpoints go, how failures are handled), the data and anything in `more` (the stage, the judge)."""
    payload = json.dumps([params.model_dump(exclude={"runtime"}), stats.to_json(), *more], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def open_run(client: MlflowClient, params: Params, project_root: Path, stage: str, key: str, workers: int,
             use_gpu: bool) -> str:
    """The MLflow run of this training: the unfinished one with the same `key` (runtime.resume), or a new one."""
    run_id = reopened_run(client, params, key, "MLflow run")
    if run_id:
        return run_id
    run_id = runs.create_run(
        client, params.mlflow.experiment, project_root, run_name=runs.run_name(stage),
        tags=provenance.run_tags(project_root, params, stage) | {RUN_KEY_TAG: key},
        params=params.model_dump() | {"resolved": {"num_workers": workers, "use_gpu": use_gpu}},
    )
    print(f"MLflow run {run_id} in experiment {params.mlflow.experiment!r} ({client.tracking_uri})")
    return run_id


def reopened_run(client: MlflowClient, params: Params, key: str, what: str) -> str | None:
    """The latest unfinished run of `key`, set RUNNING again, when params.runtime allows; else None.
    A run that was killed or interrupted resumes (runtime.resume); one that ended FAILED only with
    runtime.resume_failed: resumed from its last checkpoint with the same random draws, an error
    that training raised would come back."""
    run = unfinished_run(client, params.mlflow.experiment, key) if params.runtime.resume else None
    if run is None:
        return None
    run_id = run.info.run_id
    if run.info.status == "FAILED" and not params.runtime.resume_failed:
        print(f"starting a new {what}: {run_id}, an earlier attempt with the same config, ended FAILED, and resuming"
              " it would repeat its random draws from its last checkpoint (--set runtime.resume_failed=true does)")
        return None
    client.update_run(run_id, status="RUNNING")
    print(f"resuming {what} {run_id}: an earlier attempt with the same config did not finish"
          f" ({run.info.status})")
    return run_id


def unfinished_run(client: MlflowClient, experiment: str, key: str):
    """The latest run of `key` (a training's, or a tune search's parent) that did not finish, if any."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    unfinished = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return unfinished[0] if unfinished else None


def ended_status(error: BaseException) -> str:
    """KILLED for an interruption (Ctrl-C, a stop signal), FAILED for an error that training raised."""
    return "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"


@contextmanager
def ended_as_it_went(client: MlflowClient, run_id: str) -> Iterator[None]:
    """The MLflow run ends FINISHED when the block does, KILLED or FAILED when it raises (`ended_status`)."""
    try:
        yield
    except BaseException as error:
        client.set_terminated(run_id, ended_status(error))
        raise
    client.set_terminated(run_id, "FINISHED")
