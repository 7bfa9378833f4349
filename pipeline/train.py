"""train stage: Ray Train (DDP) of the GAN segmenter with the tuned config.

`run` is the stage driver: it layers the params, creates (or resumes) the MLflow run, launches the
TorchTrainer whose workers run pipeline/worker.py, exports the best model to models/ and registers it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from ganseg.checkpoints import load_networks, load_weights_file, read_checkpoint, weights_to_export
from ganseg.config import Params
from ganseg.contracts import MODEL_CARD, DatasetStats, ModelCard, read_dataset_stats, write_model_card
from ganseg.dotted import get_dotted, parse_override
from ganseg.errors import CheckpointError
from ganseg.export import MODEL_WEIGHTS, export_model, load_model
from ganseg.fileio import atomic_dir, atomic_write_text, read_json
from ganseg.segmenter.training import build_networks
from pipeline import provenance, registry, tracking
from pipeline.cluster import start_ray
from pipeline.console import LOG_DIR
from pipeline.runtime import (
    check_device_support,
    fit_or_explain,
    make_trainer,
    resolve_scaling,
    storage_path,
    warn_about_slower_options,
)
from pipeline.worker import STATE_FILE, loop_config

log = logging.getLogger(__name__)


def tuned_overrides(best_config: Path) -> dict:
    """The tune stage's best overrides, or none when the stage has not run."""
    if not best_config.is_file():
        log.info("no %s: no tuned settings to apply", best_config)
        return {}
    return read_json(best_config)["overrides"]


def layered_params(params: Params, tuned: dict, overrides: list[str], tuned_from: str) -> tuple[Params, list[str]]:
    """Params by precedence: the params file (over the defaults) < the tuned best config < --set.

    Also one line per effective value that differs from the params file, naming where it came from.
    """
    cli = dict(parse_override(text) for text in overrides)
    effective = params.with_overrides(tuned | cli)
    sources = {key: f"tuned: {tuned_from}" for key in tuned} | {key: "--set" for key in cli}
    before, after = params.model_dump(), effective.model_dump()
    lines = [
        f"{key} = {_shown(get_dotted(after, key))} ({source})"
        for key, source in sources.items()
        if get_dotted(after, key) != get_dotted(before, key)
    ]
    return effective, lines


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def run(
    params: Params,
    project_root: Path,
    best_config: Path,
    models_dir: Path,
    history_csv: Path,
    overrides: list[str] = (),
    params_file: str = "params.yaml",
    generated_from: dict[str, Path] | None = None,
) -> dict:
    """`params` as in the params file; the tuned best config, then `overrides` (--set) go over them.

    `generated_from` (the train_synthetic stage): the image generator folder ("image_generator") and
    the judge segmenter ("judge") behind train.synthetic's generated pairs.
    """
    shown_path = best_config.relative_to(project_root) if best_config.is_relative_to(project_root) else best_config
    params, changed = layered_params(params, tuned_overrides(best_config), overrides, str(shown_path))
    print(f"settings that differ from {params_file}:" if changed else f"settings as in {params_file}")
    for line in changed:
        print(f"  {line}")
    data_dir = project_root / params.data.output_dir
    stats = read_dataset_stats(data_dir)
    stage, sources = ("train_synthetic", _sources(generated_from)) if generated_from else ("train", {})
    start_ray(project_root / LOG_DIR / f"{stage}.log")
    uri = tracking.tracking_uri(project_root)
    client = MlflowClient(uri)
    workers, use_gpu = resolve_scaling(params.train)
    check_device_support(params.train, use_gpu)
    warn_about_slower_options(params.train, use_gpu)
    key = run_key(params, stats, stage, sources) if sources else run_key(params, stats)
    run_id = open_run(client, params, project_root, stage, key, workers, use_gpu)
    with ended_as_it_went(client, run_id):
        # The Ray run is named after the MLflow run: a rerun after a crash finds its checkpoints.
        name = f"{stage}-{run_id}"
        run_dir = f"{storage_path(params, project_root)}/{name}"
        check_checkpoints_fit(run_dir, *build_networks(params, stats.channels, stats.num_classes))
        config = loop_config(params, data_dir, uri, run_id, progress=True) | {
            f"{role}_dir": str(folder.resolve()) for role, folder in (generated_from or {}).items()}
        trainer = make_trainer(params, config, name, project_root)
        latest, best = fit_latest_and_best(trainer, run_dir, "val_miou")
        summary = _export(params, stats, latest, best, run_id, models_dir, history_csv)
        summary |= _log_model(uri, run_id, models_dir, params.mlflow.registered_model)
    return summary


def _sources(generated_from: dict[str, Path]) -> dict[str, str | None]:
    """The MLflow runs behind the image generator and the judge: part of the run key."""
    from ganseg.imagegen.export import load_image_generator

    return {"image_generator": load_image_generator(generated_from["image_generator"])[1].mlflow_run_id,
            "judge": load_model(generated_from["judge"])[1].mlflow_run_id}


@contextmanager
def ended_as_it_went(client: MlflowClient, run_id: str) -> Iterator[None]:
    """The MLflow run ends FINISHED when the block does, FAILED when it raises (or is interrupted)."""
    try:
        yield
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def fit_latest_and_best(trainer, run_dir: str, score: str) -> tuple[dict, dict]:
    """trainer.fit(), then the training state of the latest checkpoint and of the best by `score`."""
    result = fit_or_explain(trainer, run_dir)
    return _load_state(result.checkpoint), _load_state(result.get_best_checkpoint(metric=score, mode="max"))


RUN_KEY_TAG = "ganseg.run_key"


def run_key(params: Params, stats: DatasetStats, *more) -> str:
    """A fingerprint of what determines the result: the params (less the runtime section: where
    checkpoints go, how failures are handled), the data and anything in `more` (the stage, the judge)."""
    payload = json.dumps([params.model_dump(exclude={"runtime"}), stats.to_json(), *more], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def open_run(client: MlflowClient, params: Params, project_root: Path, stage: str, key: str, workers: int,
             use_gpu: bool) -> str:
    """The MLflow run of this training: the unfinished one with the same `key` (runtime.resume), or a new one."""
    run_id = _unfinished_run(client, params.mlflow.experiment, key) if params.runtime.resume else None
    if run_id:
        client.update_run(run_id, status="RUNNING")
        print(f"resuming MLflow run {run_id}: an earlier attempt with the same config did not finish")
        return run_id
    run_id = tracking.create_run(
        client, params.mlflow.experiment, project_root, run_name=tracking.run_name(stage),
        tags=provenance.run_tags(project_root, params, stage) | {RUN_KEY_TAG: key},
        params=params.model_dump() | {"resolved": {"num_workers": workers, "use_gpu": use_gpu}},
    )
    print(f"MLflow run {run_id} in experiment {params.mlflow.experiment!r} ({client.tracking_uri})")
    return run_id


def _unfinished_run(client: MlflowClient, experiment: str, key: str) -> str | None:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def check_checkpoints_fit(run_dir: str, generator: torch.nn.Module, discriminator: torch.nn.Module) -> None:
    """Before any worker starts: the Ray checkpoints of the run to resume must hold networks of the
    params' architecture, as `generator` and `discriminator` (they may not, e.g. when written by
    code that built the networks otherwise)."""
    from ray.train import Result

    try:
        result = Result.from_path(run_dir)
    except RuntimeError:  # no run folder or no checkpoint record: nothing to resume
        return
    kept = {c.path: c for c in [result.checkpoint, *(c for c, _ in result.best_checkpoints)] if c is not None}
    for checkpoint in kept.values():
        with checkpoint.as_directory() as folder:
            path = Path(folder) / STATE_FILE
            try:
                load_networks(generator, discriminator, read_checkpoint(path), path)
            except CheckpointError as err:
                raise CheckpointError(
                    f"{err}\n  (a checkpoint of the run being resumed; --set runtime.resume=false starts afresh)"
                ) from None


def _load_state(checkpoint) -> dict:
    with checkpoint.as_directory() as folder:
        return load_weights_file(Path(folder) / STATE_FILE)


def _export(
    params: Params, stats: DatasetStats, latest: dict, best: dict, run_id: str, models_dir: Path, history_csv: Path
) -> dict:
    best_metrics = best["history"][-1]
    summary = {"best_epoch": best["epoch"], "best_val_miou": best_metrics["val_miou"], "mlflow_run_id": run_id}
    history = pd.DataFrame(latest["history"]).to_csv(index=False)  # ready before either output moves
    with atomic_dir(models_dir) as staging:
        export_model(staging, weights_to_export(best), ModelCard.for_data(params.model, stats, **summary))
    atomic_write_text(history_csv, history)
    print(f"best validation mIoU {best_metrics['val_miou']:.4f} at epoch {best['epoch']}; model in {models_dir}")
    return summary


def _log_model(uri: str, run_id: str, models_dir: Path, registered_name: str) -> dict:
    """Log and register the generator (input: a batch of images), and note the version in the model card."""
    generator, card = load_model(models_dir)
    example = np.zeros((1, card.in_channels, card.image_size, card.image_size), np.float32)
    version = registry.log_and_register(uri, run_id, generator, example,
                                        [models_dir / MODEL_CARD, models_dir / MODEL_WEIGHTS], registered_name)
    registered = {"registered_model": registered_name, "registered_model_version": version}
    write_model_card(models_dir, card.model_copy(update=registered))
    MlflowClient(uri).log_artifact(run_id, str(models_dir / MODEL_CARD), artifact_path="model_card")
    return registered
