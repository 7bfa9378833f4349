"""What every Ray Train worker runs (`train_loop_per_worker`), whatever the job: the segmenter
(train, tune), the image generator (train_imagegen), the segmenter with generated pairs
(train_synthetic) or the throughput bench; and what a one-worker Tune trial runs in its own
process (`trial_loop`): the same loop, with Ray Tune in place of Ray Train.

Each worker builds the job on its device and shard, resumes from the checkpoint Ray hands it,
then trains epoch by epoch; every worker reports each epoch, rank 0 with the checkpoint, and logs
the epoch to the MLflow run the stage driver created once that checkpoint is committed.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import torch

from ganseg.checkpoints import checkpoint_of, restore_checkpoint
from ganseg.config import Params
from ganseg.jobs import Worker, WorkerJob, job_class, job_reference
from ganseg.parallel import ddp_options
from pipeline.console import say, say_epoch
from pipeline.store import pull_prepared
from pipeline.workspace import project_store


def loop_config(job: type, params: Params, data_dir: Path | None, tracking_uri: str | None = None,
                run_id: str | None = None, progress: bool = False, options: dict | None = None) -> dict:
    """What every worker gets: the job class (by reference) and its `options`, the params, the
    prepared data (on the project's store, when there is one: each node pulls its own copy) and the
    MLflow run; with `progress`, rank 0 prints a line per epoch."""
    on_store = data_dir is not None and project_store() is not None
    return {"job": job_reference(job), "options": options or {}, "params": params.model_dump(),
            "data_dir": str(data_dir.resolve()) if data_dir else None,
            "data_on_store": params.data.output_dir if on_store else None,
            "tracking_uri": tracking_uri, "run_id": run_id, "progress": progress}


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point: a worker of a TorchTrainer's group."""
    run_loop(config, TrainSession())


def trial_loop(config: dict, use_gpu: bool) -> None:
    """A one-worker Tune trial, trained in the trial's own process: no worker group to start, and
    no second process per trial on the node."""
    run_loop(config, TrialSession(use_gpu))


class TrainSession:
    """The loop's place, checkpoints and reports through Ray Train."""

    def worker(self, job: WorkerJob) -> Worker:
        return ray_worker(job)

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, folder: str | None = None) -> None:
        import ray.train as train

        train.report(metrics, checkpoint=train.Checkpoint.from_directory(folder) if folder else None)

    def wait_for_commit(self) -> None:
        """Until every checkpoint reported so far is committed to storage."""
        import ray.train

        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)


class TrialSession:
    """The same through Ray Tune, for the only worker of a trial: rank 0 of 1, on the trial's GPU
    when it has one."""

    def __init__(self, use_gpu: bool):
        self.device = torch.device("cuda" if use_gpu else "cpu")

    def worker(self, job: WorkerJob) -> Worker:
        return Worker(device=self.device, place=lambda network: network.to(self.device))

    def checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()

    def report(self, metrics: dict, folder: str | None = None) -> None:
        import ray.tune as tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    def wait_for_commit(self) -> None:
        pass  # Tune's report returns once the checkpoint is stored


Session = TrainSession | TrialSession


def run_loop(config: dict, session: Session) -> None:
    params = Params.model_validate(config["params"])
    data_dir = Path(config["data_dir"]) if config["data_dir"] else None
    if config.get("data_on_store"):
        data_dir = pull_prepared(project_store(), config["data_on_store"])
    job = job_class(config["job"])(params, data_dir, config["options"])
    worker = session.worker(job)
    states = job.start(worker)
    epoch, history = resume(states, worker, session)
    resumed, first_epoch, started = epoch > 0, epoch, time.monotonic()
    logger = chief_logger(config, job.score, worker, session)
    if logger:
        logger.log_new(history)  # epochs checkpointed before a crash but never logged
    while epoch < job.epochs:
        epoch += 1
        maybe_inject_fault(params, epoch, worker.rank, resumed, session)
        worker.seed_epoch(params.seed, epoch)
        metrics = {"epoch": epoch} | job.train_epoch(epoch)
        history.append(metrics)
        if logger and logger.pictures_due(epoch, params.mlflow.log_images_every, job.epochs):
            logger.log_picture(job.picture(epoch))
        report(metrics, states, epoch, history, worker.is_chief, session)
        if logger:
            logger.log_new(history)
        if config["progress"] and worker.is_chief:
            took = time.monotonic() - started
            say_epoch(job.title, metrics, job.epochs, epoch - first_epoch, took, job.score)


def chief_logger(config: dict, score: str, worker: Worker, session: Session):
    """The chief's MLflow logger of the run's epochs; None on the other workers, which therefore
    never import MLflow (about 2.5 CPU-seconds of each worker's start)."""
    if not (worker.is_chief and config["run_id"]):
        return None
    from pipeline.tracking.epochs import EpochLogger

    return EpochLogger(config["tracking_uri"], config["run_id"], score, session.wait_for_commit)


def ray_worker(job: WorkerJob) -> Worker:
    """This Ray Train worker: its rank, device, networks placed by Ray (DDP with several workers)
    and data loaders sharded by Ray."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    batch_norm_across_workers = job.batch_norm and world > 1
    sync_batch_norm = batch_norm_across_workers and device.type == "cuda"  # SyncBatchNorm cannot sync CPU tensors
    if batch_norm_across_workers and not sync_batch_norm and rank == 0:
        say(f"warning: model.norm batch on {world} CPU workers: batch statistics stay per worker;"
            " use group or instance norm for results independent of the worker count")
    return Worker(rank, world, device, lambda network: place(network, sync_batch_norm),
                  lambda dataset, batch_size: shuffled_loader(dataset, batch_size, world))


def place(network: torch.nn.Module, sync_batch_norm: bool = False) -> torch.nn.Module:
    """`network` on this worker's device, and into DDP when there are several workers (with
    ganseg.parallel.ddp_options; batch norm synchronised across GPU workers with `sync_batch_norm`)."""
    import ray.train.torch

    if sync_batch_norm:
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return ray.train.torch.prepare_model(network, parallel_strategy_kwargs=ddp_options(network))


def shuffled_loader(dataset, batch_size: int, world: int):
    """Shuffled, and sharded across workers by Ray (with a DistributedSampler) when world > 1."""
    import ray.train.torch
    from torch.utils.data import DataLoader

    drop_last = len(dataset) >= batch_size * world
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last)
    return ray.train.torch.prepare_data_loader(loader)


def maybe_inject_fault(params: Params, epoch: int, rank: int, resumed: bool, session: Session) -> None:
    """Kill this worker process as `at_epoch` starts, once: never in an attempt that resumed."""
    fault = params.runtime.fault_injection
    if fault and not resumed and epoch == fault.at_epoch and rank == fault.kill_rank:
        session.wait_for_commit()  # die only once the previous epoch's checkpoint is committed: recovery starts there
        say(f"fault injection: killing worker rank {rank} (pid {os.getpid()}) at the start of epoch {epoch}")
        os.kill(os.getpid(), signal.SIGKILL)


def resume(states: dict, worker: Worker, session: Session) -> tuple[int, list[dict]]:
    """(epoch, history) of the checkpoint Ray hands this attempt, restored into `states` (by file
    name, in their order: the last one's RNG state is the one that counts); (0, []) on a first attempt."""
    reported = session.checkpoint()
    if reported is None:
        return 0, []
    with reported.as_directory() as folder:
        checkpoint = {}
        for file_name, state in states.items():
            checkpoint = restore_checkpoint(state, Path(folder) / file_name)
    if worker.is_chief:
        say(f"resumed from the checkpoint of epoch {checkpoint['epoch']} (step {checkpoint['global_step']})")
    return checkpoint["epoch"], checkpoint["history"]


def report(metrics: dict, states: dict, epoch: int, history: list, is_chief: bool, session: Session) -> None:
    """Every worker reports; only the chief attaches the checkpoint (every state the job trains; the
    history goes with the last, the main one). A job without states reports an empty checkpoint:
    Ray Train hands the driver only metrics reported with one."""
    if not is_chief:
        session.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        for file_name, state in states.items():
            main = file_name == list(states)[-1]
            torch.save(checkpoint_of(state, epoch, history if main else []), Path(folder) / file_name)
        session.report(metrics, folder)
