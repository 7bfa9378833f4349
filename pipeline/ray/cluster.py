"""Joining the Ray cluster in RAY_ADDRESS, or starting a private local one, with Ray's output
sent to the stage's log. Every stage that uses Ray starts here, prepare included: this module
imports neither torch nor the training code."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray

from pipeline.console import RayOutput, shown_path

# Where the project and MLflow are, for every node (pipeline/store.py, pipeline/storage.py).
# and whether inference keeps off the GPUs (GANSEG_CPU: ganseg/devices.py).
FORWARDED_VARIABLES = ("GANSEG_STORE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "MLFLOW_TRACKING_URI",
                       "GANSEG_GIT_COMMIT", "GANSEG_GIT_DIRTY", "GANSEG_CPU")
JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a submitted job's entrypoint
# Ray warns at every start of a local cluster that it turned token authentication on, its default:
# start_ray's "Ray:" line says so instead.
logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
    lambda record: record.levelno > logging.WARNING)
TRAIN_ENV_VARS = {
    # Ray's 60 s default is too short for a worker to import torch on a busy 2-core machine.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600"),
    # Ray Train's controller takes in reported checkpoints when it polls the workers, every 2 s by default;
    # the chief waits for each epoch's commit before logging it, so an epoch of a few seconds lost up to 2.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"),
}
# A private local runtime is one machine that no autoscaler drains: Ray Train's preemption watcher (an
# actor of every training run, waiting for drained nodes) would cost each stage some 6 CPU-seconds for nothing.
LOCAL_TRAIN_ENV_VARS = TRAIN_ENV_VARS | {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"),
}


def start_ray(log_path: Path | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a private local one.

    With `log_path`, Ray's own output (its driver loggers and everything its workers print) goes
    to that file and the console gets only our progress lines and Ray's warnings and errors.

    The local runtime starts with its dashboard: without it, Tune trials that each launch a
    TorchTrainer were seen to hang on a 2-CPU machine. It is always a new one (address "local"):
    a bare ray.init() would join whatever cluster `ray start` last recorded on this machine, and
    wait minutes for it if that cluster has since gone. `num_cpus` limits the local one (benchmarks).
    """
    if ray.is_initialized():
        return
    output = RayOutput(log_path) if log_path else None
    if output:
        output.take_over_driver_loggers()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=cluster_runtime_env({"env_vars": dict(TRAIN_ENV_VARS)}))
        released = release_placement_groups_of_ended_jobs()
        if released:
            print(f"Ray: released {released} placement group(s) that ended jobs still held")
    else:
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                 runtime_env={"env_vars": dict(LOCAL_TRAIN_ENV_VARS)}, num_cpus=num_cpus)
    resources = ray.cluster_resources()
    where = ""
    if output:
        output.take_over_worker_output()
        where = f"; Ray's log: {shown_path(log_path)}"
    auth = ", token auth" if token_auth(joined=bool(os.environ.get("RAY_ADDRESS"))) else ""
    print(f"Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs{auth}{where}")


def token_auth(joined: bool) -> bool:
    """Whether Ray authenticates with a token: as RAY_AUTH_MODE says; unset, a new local cluster
    turns it on (Ray's default), a joined one is what it is and said nothing."""
    mode = os.environ.get("RAY_AUTH_MODE")
    return mode == "token" if mode is not None or joined else True


def cluster_runtime_env(runtime_env: dict) -> dict:
    """What every process of this stage on the cluster gets: the settings that say where the project
    and MLflow are (never credentials: Ray shows runtime environments in its dashboard), and,
    unless the stage already runs as a Ray job that brought its working dir, this checkout's
    `ganseg` and `pipeline` packages, so remote workers run the code being run here."""
    job = json.loads(os.environ.get(JOB_CONFIG_VARIABLE) or "{}").get("runtime_env") or {}
    given = job.get("env_vars") or {}
    forwarded = {name: os.environ[name] for name in FORWARDED_VARIABLES if os.environ.get(name) and name not in given}
    runtime_env = runtime_env | {"env_vars": runtime_env["env_vars"] | forwarded}
    if not job.get("working_dir") and not job.get("py_modules"):
        import ganseg
        import pipeline

        runtime_env["py_modules"] = [str(Path(module.__file__).parent) for module in (ganseg, pipeline)]
    return runtime_env


def release_placement_groups_of_ended_jobs() -> int:
    """Remove the placement groups still reserved for jobs that have ended; how many. A tune job
    stopped with `ray job stop` while a trial was starting was seen to leave that trial's group
    holding its CPUs, and the next job then waited for them forever. Without Ray's state API (a
    cluster without its dashboard) nothing is released."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray.util.state import list_jobs, list_placement_groups
    from ray.util.state.exception import RayStateApiException

    try:
        held = held_by_ended_jobs(list_placement_groups(detail=True, limit=10_000), list_jobs(limit=10_000))
    except (RayStateApiException, ConnectionError, RuntimeError):  # no dashboard, or no ray[default]
        return 0
    for group_id in held:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
    return len(held)


def held_by_ended_jobs(groups: list, jobs: list) -> list[str]:
    """The ids of the placement groups (Ray's state API records) that are not removed, not detached,
    and whose creating job is neither pending nor running."""
    live = {job.job_id for job in jobs if job.status in ("PENDING", "RUNNING")}
    return [group.placement_group_id for group in groups
            if group.state != "REMOVED" and not group.is_detached and group.creator_job_id not in live]


def node_count() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"])

