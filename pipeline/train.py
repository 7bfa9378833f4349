"""train stage: Ray Train (DDP) of the GAN segmenter with the tuned config.

`train_loop_per_worker(config)` is what every Ray worker runs; `run` is the stage driver that
creates the MLflow run, launches the TorchTrainer and exports the best model to models/.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, Subset

from ganseg import provenance, tracking
from ganseg.config import Params
from ganseg.data import PreparedSplit, read_stats
from ganseg.engine import (
    GanParts,
    build_networks,
    build_optimizers,
    confusion_over,
    export_model,
    restore_training_state,
    shard_indices,
    train_epoch,
    training_state,
)
from ganseg.epoch_logging import learning_rates, log_overlays_if_due
from ganseg.fileio import atomic_dir, atomic_write_text, read_json, write_json
from ganseg.metrics import scores

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    params = Params.model_validate(config["params"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    data_dir = Path(config["data_dir"])
    stats = read_stats(data_dir)
    num_classes, class_names = stats["num_classes"], stats["class_names"]

    generator, discriminator = build_networks(params, stats["channels"], num_classes)
    parts = build_optimizers(
        ray.train.torch.prepare_model(generator), ray.train.torch.prepare_model(discriminator), params.train
    )
    train_set = PreparedSplit(data_dir, "train")
    train_loader = ray.train.torch.prepare_data_loader(
        DataLoader(train_set, batch_size=params.train.batch_size, shuffle=True,
                   drop_last=len(train_set) >= params.train.batch_size * world)
    )
    val_set = PreparedSplit(data_dir, "val")
    val_loader = DataLoader(Subset(val_set, shard_indices(len(val_set), rank, world)),
                            batch_size=params.evaluate.batch_size)

    epoch, history, best = _resume(parts)
    client = MlflowClient(config["tracking_uri"]) if rank == 0 and config.get("run_id") else None
    while epoch < params.train.epochs:
        epoch += 1
        if world > 1:
            train_loader.sampler.set_epoch(epoch)
        step_stats = train_epoch(parts, train_loader, params.train)
        confusion = confusion_over(parts.generator, val_loader, num_classes, device)
        throughput = torch.tensor([step_stats.pop("images_per_s")], device=device)
        if world > 1:
            dist.all_reduce(confusion)
            dist.all_reduce(throughput)
        metrics = {"epoch": epoch, **step_stats, "images_per_s": throughput.item()} | _val_metrics(confusion, class_names)
        metrics |= learning_rates(parts)
        history.append(metrics)
        if metrics["val_miou"] > best.get("val_miou", -1.0):
            weights = {k: v.detach().cpu().clone() for k, v in _plain(parts.generator).state_dict().items()}
            best = {"epoch": epoch, "val_miou": metrics["val_miou"], "generator": weights}
        if client:
            tracking.log_metrics(client, config["run_id"], metrics, step=epoch)
            log_overlays_if_due(client, config["run_id"], parts, val_set, params, epoch)
        _report(metrics, parts, epoch, history, best, is_chief=rank == 0)


def _plain(module):
    return getattr(module, "module", module)


def _val_metrics(confusion: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    s = scores(confusion.cpu())
    per_class = {f"val_dice_{name}": value for name, value in zip(class_names, s["dice"])}
    return {"val_miou": s["miou"], "val_mdice": s["mdice"], "val_pixel_accuracy": s["pixel_accuracy"]} | per_class


def _resume(parts: GanParts) -> tuple[int, list[dict], dict]:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, [], {}
    with checkpoint.as_directory() as folder:
        state = restore_training_state(parts, Path(folder) / STATE_FILE)
    log.info("resumed from the checkpoint of epoch %d", state["epoch"])
    return state["epoch"], state["history"], state["best"]


def _report(metrics: dict, parts: GanParts, epoch: int, history: list, best: dict, is_chief: bool) -> None:
    """Every worker reports; only the chief attaches the checkpoint (full state + best weights)."""
    import ray.train

    if not is_chief:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(training_state(parts, epoch, history, best), Path(folder) / STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def loop_config(params: Params, data_dir: Path, tracking_uri: str, run_id: str | None) -> dict:
    return {
        "params": params.model_dump(),
        "data_dir": str(data_dir.resolve()),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
    }


def apply_best_config(params: Params, best_config: Path) -> Params:
    if not best_config.is_file():
        log.info("no %s: training with params.yaml as it is", best_config)
        return params
    overrides = read_json(best_config)["overrides"]
    log.info("training with the tuned overrides %s", overrides)
    return params.with_overrides(overrides)


def run(params: Params, project_root: Path, best_config: Path, models_dir: Path, history_csv: Path) -> dict:
    from pipeline.runtime import make_trainer, resolve_scaling, start_ray

    params = apply_best_config(params, best_config)
    data_dir = project_root / params.data.output_dir
    stats = read_stats(data_dir)
    start_ray()
    uri = tracking.tracking_uri(project_root)
    client = MlflowClient(uri)
    workers, use_gpu = resolve_scaling(params.train)
    run_id = tracking.create_run(
        client, params.mlflow.experiment, project_root, run_name=tracking.run_name("train"),
        tags=provenance.run_tags(project_root, params, "train"),
        params=params.model_dump() | {"resolved": {"num_workers": workers, "use_gpu": use_gpu}},
    )
    print(f"MLflow run {run_id} in experiment {params.mlflow.experiment!r} ({uri})")
    try:
        trainer = make_trainer(params, loop_config(params, data_dir, uri, run_id), f"train-{run_id}", project_root)
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        summary = _export(params, stats, state, run_id, models_dir, history_csv)
        summary |= _log_model(uri, run_id, models_dir, params.mlflow.registered_model)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return summary


def _export(params: Params, stats: dict, state: dict, run_id: str, models_dir: Path, history_csv: Path) -> dict:
    best = state["best"]
    summary = {"best_epoch": best["epoch"], "best_val_miou": best["val_miou"], "mlflow_run_id": run_id}
    with atomic_dir(models_dir) as staging:
        export_model(staging, best["generator"], params.model, stats, summary)
    atomic_write_text(history_csv, pd.DataFrame(state["history"]).to_csv(index=False))
    print(f"best validation mIoU {best['val_miou']:.4f} at epoch {best['epoch']}; model in {models_dir}")
    return summary


def _log_model(uri: str, run_id: str, models_dir: Path, registered_name: str) -> dict:
    """Log the generator (with signature, input example and the model folder as extra files),
    register it as a new version of `registered_name`, and note that version in the model card."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import infer_signature

    from ganseg.engine import MODEL_CARD, MODEL_WEIGHTS, load_model

    generator, card = load_model(models_dir)
    size = card["image_size"]
    example = np.zeros((1, card["in_channels"], size, size), np.float32)
    with torch.no_grad():
        output = generator(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            generator,
            name="model",
            signature=infer_signature(example, output),
            input_example=example,
            serialization_format="pickle",  # pt2 would freeze the batch and image size
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            # The plain model folder travels with the logged model: `ganseg predict` needs no pickle.
            extra_files=[str(models_dir / MODEL_CARD), str(models_dir / MODEL_WEIGHTS)],
            registered_model_name=registered_name,
        )
        registered = {"registered_model": registered_name, "registered_model_version": str(info.registered_model_version)}
        write_json(models_dir / MODEL_CARD, card | registered)
        mlflow.log_artifact(str(models_dir / MODEL_CARD), artifact_path="model_card")
    print(f"registered {registered_name} version {info.registered_model_version} (models:/{registered_name}/{info.registered_model_version})")
    return registered
