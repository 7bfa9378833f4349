"""Resource sizing and the TorchTrainer factory of every training (pipeline/training.py, the tune stage)."""

from __future__ import annotations

from pathlib import Path

import ray

from ganseg.config import Params, TrainConfig
from ganseg.errors import GansegError, NonFiniteLossError
from pipeline.storage import Location, is_uri, location
from pipeline.workspace import project_store, stores_root


class ClusterResourcesError(GansegError, RuntimeError):
    """The params ask for more workers or GPUs than the Ray cluster has: Ray would wait forever."""


def resolve_scaling(
    cfg: TrainConfig, num_workers: int | str | None = None, workers_key: str = "train.num_workers"
) -> tuple[int, bool]:
    """(workers, use_gpu) for the running Ray cluster; see `scaling_for`."""
    return scaling_for(ray.cluster_resources(), cfg, num_workers, workers_key)


def scaling_for(
    resources: dict[str, float],
    cfg: TrainConfig,
    num_workers: int | str | None = None,
    workers_key: str = "train.num_workers",
) -> tuple[int, bool]:
    """(workers, use_gpu) with 'auto' resolved against `resources` (as from ray.cluster_resources()):
    one worker per GPU, else per CPU. ClusterResourcesError if the cluster cannot hold them all.

    Ray Train gives each worker one GPU when use_gpu is on, else one CPU.
    """
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if cfg.use_gpu is True and gpus == 0:
        raise ClusterResourcesError(
            f"train.use_gpu is true but the Ray cluster has no GPU ({cpus} CPUs): set train.use_gpu to auto or false"
        )
    use_gpu = gpus > 0 if cfg.use_gpu == "auto" else bool(cfg.use_gpu)
    wanted = cfg.num_workers if num_workers is None else num_workers
    if wanted == "auto":
        wanted = gpus if use_gpu else cpus
    workers = max(1, int(wanted))
    unit, available = ("GPU", gpus) if use_gpu else ("CPU", cpus)
    if workers > available:
        raise ClusterResourcesError(
            f"{workers_key} = {workers} needs {workers} {unit}s (one per worker) but the Ray cluster has"
            f" {available}: lower {workers_key} or set it to auto"
        )
    return workers, use_gpu


def run_storage(params: Params, project_root: Path) -> Location:
    """Where Ray keeps run folders and checkpoints (runtime.storage_path): a URI as it is; a relative
    path under the project store when there is one (GANSEG_STORE), else under the project."""
    path = params.runtime.storage_path
    store = project_store()
    if store is not None and not is_uri(path) and not Path(path).is_absolute():
        return store.join(path)
    return location(path, base=stores_root(project_root))


def ray_storage(storage: Location) -> dict:
    """RunConfig's arguments for `storage`: the path on its filesystem, and that filesystem."""
    return {"storage_path": storage.path, "storage_filesystem": storage.filesystem}


def make_trainer(
    params: Params,
    loop_config: dict,
    name: str,
    project_root: Path,
    callbacks: list | None = None,
    num_workers: int | str | None = None,
    score: str = "val_miou",
):
    """A TorchTrainer whose workers run the job that `loop_config` names; Ray keeps the best
    checkpoints by `score` (higher is better) and always the latest."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.ray.worker import train_loop_per_worker

    workers, use_gpu = resolve_scaling(params.train, num_workers)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=name,
            **ray_storage(run_storage(params, project_root)),
            checkpoint_config=CheckpointConfig(
                num_to_keep=params.runtime.checkpoints_to_keep,
                checkpoint_score_attribute=score,
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=params.runtime.max_failures),
            callbacks=callbacks or [],
        ),
    )


def fit_or_explain(trainer, run_dir: Location):
    """trainer.fit(); a worker's NaN or infinite loss comes back as NonFiniteLossError, with where
    Ray keeps the last good checkpoint (the one reported after the last complete epoch)."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as err:
        cause = non_finite_cause(err)
        if cause is None:
            raise
        note = last_checkpoint_note(run_dir)
        raise NonFiniteLossError(cause.loss, cause.value, cause.epoch, cause.step, note, cause.advice) from None


def non_finite_cause(error: BaseException) -> NonFiniteLossError | None:
    """The NonFiniteLossError a worker raised, if that is why Ray Train failed."""
    failures = getattr(error, "worker_failures", None) or {}
    return next((e for e in failures.values() if isinstance(e, NonFiniteLossError)), None)


def last_checkpoint_note(run_dir: Location) -> str:
    from ray.train import Result

    try:
        result = Result.from_path(run_dir.path, storage_filesystem=run_dir.filesystem)
    except RuntimeError:  # no run folder or no checkpoint record yet
        result = None
    if result is None or result.checkpoint is None:
        return "no epoch had finished, so there is no checkpoint; models/ is unchanged"
    epoch = (result.metrics or {}).get("epoch", "?")
    return f"the last good checkpoint (epoch {epoch}) is kept in {result.checkpoint.path}; models/ is unchanged"
