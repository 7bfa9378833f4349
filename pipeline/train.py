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

from ganseg import tracking
from ganseg.config import Params
from ganseg.data import PreparedSplit, read_stats
from ganseg.engine import (
    GanParts,
    build_networks,
    build_optimizers,
    confusion_over,
    export_model,
    load_weights_file,
    restore_training_state,
    shard_indices,
    train_epoch,
    training_state,
)
from ganseg.fileio import atomic_dir, atomic_write_text, read_json
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
        step_stats = train_epoch(parts, train_loader, params.train, epoch=epoch)
        confusion = confusion_over(parts.generator, val_loader, num_classes, device)
        throughput = torch.tensor([step_stats.pop("images_per_s")], device=device)
        if world > 1:
            dist.all_reduce(confusion)
            dist.all_reduce(throughput)
        metrics = {"epoch": epoch, **step_stats, "images_per_s": throughput.item()} | _val_metrics(confusion, class_names)
        history.append(metrics)
        if metrics["val_miou"] > best.get("val_miou", -1.0):
            weights = {k: v.detach().cpu().clone() for k, v in _plain(parts.generator).state_dict().items()}
            best = {"epoch": epoch, "val_miou": metrics["val_miou"], "generator": weights}
        if client:
            tracking.log_metrics(client, config["run_id"], metrics, step=epoch)
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
    from pipeline.runtime import fit_or_explain, make_trainer, resolve_scaling, start_ray, storage_path

    params = apply_best_config(params, best_config)
    data_dir = project_root / params.data.output_dir
    stats = read_stats(data_dir)
    start_ray()
    uri = tracking.tracking_uri(project_root)
    client = MlflowClient(uri)
    workers, use_gpu = resolve_scaling(params.train)
    run_id = tracking.create_run(
        client, params.mlflow.experiment, project_root, run_name="train",
        tags={"ganseg.stage": "train", "ganseg.dataset": str(params.data.source)},
        params=params.model_dump() | {"resolved": {"num_workers": workers, "use_gpu": use_gpu}},
    )
    print(f"MLflow run {run_id} in experiment {params.mlflow.experiment!r} ({uri})")
    try:
        name = f"train-{run_id}"
        trainer = make_trainer(params, loop_config(params, data_dir, uri, run_id), name, project_root)
        result = fit_or_explain(trainer, f"{storage_path(params, project_root)}/{name}")
        with result.checkpoint.as_directory() as folder:
            state = load_weights_file(Path(folder) / STATE_FILE)
        summary = _export(params, stats, state, run_id, models_dir, history_csv)
        _log_model(uri, run_id, models_dir)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return summary


def _export(params: Params, stats: dict, state: dict, run_id: str, models_dir: Path, history_csv: Path) -> dict:
    best = state["best"]
    summary = {"best_epoch": best["epoch"], "best_val_miou": best["val_miou"], "mlflow_run_id": run_id}
    history = pd.DataFrame(state["history"]).to_csv(index=False)  # ready before either output moves
    with atomic_dir(models_dir) as staging:
        export_model(staging, best["generator"], params.model, stats, summary)
    atomic_write_text(history_csv, history)
    print(f"best validation mIoU {best['val_miou']:.4f} at epoch {best['epoch']}; model in {models_dir}")
    return summary


def _log_model(uri: str, run_id: str, models_dir: Path) -> None:
    import mlflow
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import infer_signature

    from ganseg.engine import load_model

    generator, card = load_model(models_dir)
    size = card["image_size"]
    example = np.zeros((1, card["in_channels"], size, size), np.float32)
    with torch.no_grad():
        output = generator(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            generator,
            name="model",
            signature=infer_signature(example, output),
            input_example=example,
            serialization_format="pickle",  # pt2 would freeze the batch and image size
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        mlflow.log_artifact(str(models_dir / "model.json"), artifact_path="model_card")
