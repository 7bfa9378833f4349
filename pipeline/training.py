"""The one driver of every GAN training stage (train, train_imagegen, train_synthetic): the job's
inputs checked, Ray started, the MLflow run opened (or an unfinished one resumed), a TorchTrainer
whose workers run pipeline/ray/worker.py, the best checkpoint exported as a model folder, logged
and registered in MLflow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ganseg.checkpoints import GanState, load_networks, read_checkpoint
from ganseg.config import Params, TrainConfig
from ganseg.errors import CheckpointError
from ganseg.fileio import atomic_dir, atomic_write_text
from ganseg.jobs import GanJob
from ganseg.jobs.base import STATE_FILE
from pipeline.console import LOG_DIR, closing, shown_path
from pipeline.ray.cluster import node_count, start_ray
from pipeline.ray.runtime import (
    fit_or_explain,
    make_trainer,
    resolve_scaling,
    run_storage,
)
from pipeline.ray.worker import loop_config
from pipeline.storage import Location
from pipeline.tracking import registry, runs
from pipeline.tracking.lifecycle import ended_as_it_went, open_run, run_key


def train(job_type: type[GanJob], params: Params, project_root: Path, out_dir: Path, history_csv: Path,
          registered_name: str, options: dict | None = None) -> dict:
    """Train a `job_type` job (ganseg/jobs/, given `options`) under Ray Train; its best
    checkpoint becomes `out_dir`, registered as a new version of `registered_name`; the epochs of the
    latest go to `history_csv`. Returns the summary of the training and the registered version."""
    data_dir = project_root / params.data.output_dir
    job = job_type(params, data_dir, options)
    job.check_inputs()  # before Ray starts
    start_ray(project_root / LOG_DIR / f"{job.stage}.log")
    uri = tracking_uri_for_cluster(project_root)
    client = MlflowClient(uri)
    workers, use_gpu = resolve_scaling(params.train)
    params.train.check_device(use_gpu)
    if job.train_speed_options:
        warn_about_slower_options(params.train, use_gpu)
    key = run_key(params, job.stats, *job.run_key_parts())
    run_id = open_run(client, params, project_root, job.stage, key, workers, use_gpu)
    with ended_as_it_went(client, run_id):
        name = f"{job.stage}-{run_id}"  # a rerun after a crash finds its checkpoints
        run_dir = run_storage(params, project_root).join(name)
        check_checkpoints_fit(run_dir, job.fresh_state)
        config = loop_config(job_type, params, data_dir, uri, run_id, progress=True, options=options)
        trainer = make_trainer(params, config, name, project_root, score=job.score)
        latest, best = fit_latest_and_best(trainer, run_dir, job.score, job.model_key)
        summary = export(job, latest, best, run_id, out_dir, history_csv)
        summary |= log_model(job, params, uri, run_id, out_dir, registered_name)
    return summary


def tracking_uri_for_cluster(project_root: Path) -> str:
    """The MLflow tracking URI, refused when it is a local store and the Ray cluster has several nodes."""
    uri = runs.tracking_uri(project_root)
    nodes = node_count()
    if nodes > 1:
        runs.require_shared_store(uri, f"the Ray cluster has {nodes} nodes")
    return uri


def warn_about_slower_options(cfg: TrainConfig, use_gpu: bool) -> None:
    """Print a warning for each CPU speed option in `cfg` that a short probe finds slower than fp32."""
    from ganseg.speed import slower_options

    for warning in slower_options(cfg, use_gpu):
        print(f"warning: {warning}")


def check_checkpoints_fit(run_dir: Location, fresh: Callable[[], GanState]) -> None:
    """Before any worker starts: the Ray checkpoints of the run to resume must hold networks of the
    params' architecture, as in the state `fresh()` builds (they may not, e.g. when written by code
    that built the networks otherwise). A run with nothing to resume builds no state here."""
    from ray.train import Result

    try:
        result = Result.from_path(run_dir.path, storage_filesystem=run_dir.filesystem)
    except RuntimeError:  # no run folder or no checkpoint record: nothing to resume
        return
    kept = {c.path: c for c in [result.checkpoint, *(c for c, _ in result.best_checkpoints)] if c is not None}
    state = fresh() if kept else None
    for checkpoint in kept.values():
        with checkpoint.as_directory() as folder:
            path = Path(folder) / STATE_FILE
            try:
                load_networks(state, read_checkpoint(path, state.model_key), path)
            except CheckpointError as err:
                raise CheckpointError(
                    f"{err}\n  (a checkpoint of the run being resumed; --set runtime.resume=false starts afresh)"
                ) from None


def fit_latest_and_best(trainer, run_dir: Location, score: str, model_key: str) -> tuple[dict, dict]:
    """trainer.fit(), then the training state of the latest checkpoint and of the best by `score`
    (of a state whose trained network is `model_key`; checkpoints of older code read alike)."""
    result = fit_or_explain(trainer, run_dir)
    best = result.get_best_checkpoint(metric=score, mode="max")
    return _load_state(result.checkpoint, model_key), _load_state(best, model_key)


def _load_state(checkpoint, model_key: str) -> dict:
    with checkpoint.as_directory() as folder:
        return read_checkpoint(Path(folder) / STATE_FILE, model_key)


def export(job: GanJob, latest: dict, best: dict, run_id: str | None, out_dir: Path, history_csv: Path) -> dict:
    """The best checkpoint as the model folder `out_dir`, the latest's epochs in `history_csv`."""
    history = pd.DataFrame(latest["history"]).to_csv(index=False)  # ready before either output moves
    with atomic_dir(out_dir) as staging:
        summary = job.export(staging, best, run_id)
    atomic_write_text(history_csv, history)
    best_score = summary[f"best_{job.score}"]
    closing(f"best {job.score} {best_score:.4f} at epoch {best['epoch']}; {job.title} in {shown_path(out_dir)}")
    return summary


def log_model(job: GanJob, params: Params, uri: str, run_id: str, folder: Path, registered_name: str) -> dict:
    """Log and register the exported folder as a served model, and note the version in its card.
    Served, it limits image size and flips as `ganseg predict` with these params does."""
    servable = job.servable(folder)
    version = registry.log_and_register(uri, run_id, servable, params.data.max_image_pixels,
                                        params.evaluate.flip_tta, registered_name)
    closing(f"registered as models:/{registered_name}/{version}")
    registered = {"registered_model": registered_name, "registered_model_version": version}
    job.note_registration(folder, registered)
    MlflowClient(uri).log_artifact(run_id, str(servable.card), artifact_path="model_card")
    return registered
