"""Ray start-up, resource sizing and the TorchTrainer factory shared by the train and tune stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from ganseg.config import Params, TrainConfig

log = logging.getLogger(__name__)
# Ray's 60 s default is too short for a worker to import torch on a busy 2-core machine.
WORKER_START_TIMEOUT_S = os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


def start_ray() -> None:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a local one.

    The local runtime starts with its dashboard: without it, Tune trials that each launch a
    TorchTrainer were seen to hang on a 2-CPU machine.
    """
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": WORKER_START_TIMEOUT_S}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
    else:
        # 'local' always starts a fresh instance: a bare ray.init() would join whatever cluster
        # /tmp/ray/ray_current_cluster names, even a stopped one, and hang there.
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", runtime_env=runtime_env)
    log.info("Ray resources: %s", ray.cluster_resources())


def resolve_scaling(cfg: TrainConfig, num_workers: int | str | None = None) -> tuple[int, bool]:
    """(workers, use_gpu) with 'auto' resolved against the cluster: one worker per GPU, else per CPU."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    use_gpu = gpus > 0 if cfg.use_gpu == "auto" else bool(cfg.use_gpu)
    wanted = cfg.num_workers if num_workers is None else num_workers
    if wanted == "auto":
        wanted = gpus if use_gpu else cpus
    return max(1, int(wanted)), use_gpu


def storage_path(params: Params, project_root: Path) -> str:
    path = params.train.storage_path
    return path if "://" in path else str((project_root / path).resolve())


def make_trainer(
    params: Params,
    loop_config: dict,
    name: str,
    project_root: Path,
    callbacks: list | None = None,
    num_workers: int | str | None = None,
):
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.train import train_loop_per_worker

    workers, use_gpu = resolve_scaling(params.train, num_workers)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path(params, project_root),
            checkpoint_config=CheckpointConfig(num_to_keep=params.train.checkpoints_to_keep),
            callbacks=callbacks or [],
        ),
    )
