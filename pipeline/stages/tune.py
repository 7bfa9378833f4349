"""tune stage: a Ray Tune search. A trial of one worker (tune.workers_per_trial, the default)
trains in the trial's own process; a trial of several launches its own TorchTrainer (Train V2).

MLflow gets one parent run for the search and one child run per trial. The best trial's
overrides are written to a JSON file that the train stage reads.

A search that did not finish (its driver killed, a RayJob retried) resumes when the stage runs
again with the same config (runtime.resume): the parent run is found by its key (the params less
their runtime section, the prepared data and the stage) and reopened; the Ray Tune experiment,
named after it, is restored from its storage. Finished trials are kept as they are, child runs
included. A trial that was running (or had failed) is continued: Tune starts it again with the
same trial id, it reopens its child run and resumes from its last checkpoint (the trial's own, or
its TorchTrainer's, of the same name), so the child run's epochs go on where they stopped. A child run whose trial Tune
no longer knows ends FAILED. The restored search keeps its first attempt's settings (trials at a
time among them). Tune saves its state every few seconds (TUNE_GLOBAL_CHECKPOINT_S): a trial that
ended just before the kill may be started again, and finds its training already done.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient
from ray.tune import Callback

from ganseg.config import Params
from ganseg.contracts import read_dataset_stats
from ganseg.errors import ParamsError
from ganseg.fileio import write_json
from pipeline.console import LOG_DIR, closing, duration, metrics_text
from pipeline.ray.search import (
    check_rungs,
    make_scheduler,
    make_searcher,
    max_concurrent,
    pick_best,
    quiet_optuna,
    search_space_record,
    summary,
    to_domain,
)
from pipeline.tracking import provenance, runs
from pipeline.tracking.lifecycle import RUN_KEY_TAG, ended_status, reopened_run, run_key

log = logging.getLogger(__name__)
TRIAL_DRIVER_MEMORY = 256 * 1024**2
TRIAL_ID_TAG = "ganseg.trial_id"
STATE_SAVE_PERIOD_S = "2"  # Tune's own ("auto") is 10 s or more: a trial's end is saved sooner


def trial_params(base: Params, overrides: dict) -> Params:
    return base.with_overrides(
        overrides | {"train.epochs": base.tune.epochs, "train.num_workers": base.tune.workers_per_trial}
    )


def run_trial(overrides: dict, base: dict, context: dict) -> None:
    """The trainable: one Tune trial. A trial of one worker trains in this process; a trial of
    several drives a TorchTrainer (Train V2) of its own."""
    import ray.tune

    from ganseg.jobs.segmenter import SegmenterJob
    from pipeline.ray.worker import loop_config, trial_loop

    project_root = Path(context["project_root"])
    params = trial_params(Params.model_validate(base), overrides)
    trial_id = ray.tune.get_context().get_trial_id()
    client = MlflowClient(context["tracking_uri"])
    run_id = trial_run(client, params, project_root, overrides, trial_id, context)
    config = loop_config(SegmenterJob, params, Path(context["data_dir"]), context["tracking_uri"], run_id)
    # ASHA may stop this trial at any report, killing this function: the tune driver, which
    # knows each trial's outcome, closes the run afterwards.
    if params.train.num_workers == 1:
        trial_loop(config, context["use_gpu"])
    else:
        trainer_of_trial(params, config, context, trial_id).fit()


def trainer_of_trial(params: Params, config: dict, context: dict, trial_id: str):
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipeline.ray.runtime import make_trainer

    return make_trainer(params, config, name=f"tune-{context['parent_run_id'][:8]}-{trial_id}",
                        project_root=Path(context["project_root"]), callbacks=[TuneReportCallback()])


def trial_resources(params: Params, use_gpu: bool) -> dict:
    """What a trial asks of the cluster. One worker: a CPU (and a GPU), for it trains in the trial's
    own process. Several: memory only, every CPU left for the TorchTrainer's workers (Ray rejects
    a request of zero resources)."""
    if params.tune.workers_per_trial == 1:
        return {"cpu": 1, "gpu": 1} if use_gpu else {"cpu": 1}
    return {"cpu": 0, "memory": TRIAL_DRIVER_MEMORY}


def trial_run(client: MlflowClient, params: Params, project_root: Path, overrides: dict, trial_id: str,
              context: dict) -> str:
    """The trial's MLflow child run: the one it already has when a resumed search starts it again
    (reopened), else a new one."""
    earlier = child_runs(client, context["parent_run_id"], trial_id)
    if earlier:
        client.update_run(earlier[0].info.run_id, status="RUNNING")
        return earlier[0].info.run_id
    return runs.create_run(
        client, params.mlflow.experiment, project_root, run_name=f"trial-{trial_id}",
        tags=context["trial_tags"] | {TRIAL_ID_TAG: trial_id},
        params=params.model_dump() | {"overrides": overrides},
        parent_run_id=context["parent_run_id"],
    )


def child_runs(client: MlflowClient, parent_id: str, trial_id: str | None = None) -> list:
    """The trial runs of the search `parent_id`: all of them, or those of `trial_id`."""
    experiment = client.get_run(parent_id).info.experiment_id
    of_trial = f" and tags.`{TRIAL_ID_TAG}` = '{trial_id}'" if trial_id else ""
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'{of_trial}")


def check_trial_precision(params: Params, use_gpu: bool) -> None:
    """fp16 needs GPU workers: refuse it before any trial, whether params or the search space set it."""
    dimension = params.tune.search_space.get("train.precision")
    if dimension is None:
        params.train.check_device(use_gpu)
    elif "fp16" in (dimension.values or []) and not use_gpu:
        raise ParamsError(
            "tune.search_space: train.precision may be fp16, which needs GPU workers; search bf16 and fp32 on CPUs"
        )


def run(params: Params, project_root: Path, best_config_path: Path) -> dict:
    from ray import tune

    from pipeline.ray.cluster import start_ray
    from pipeline.ray.runtime import resolve_scaling
    from pipeline.training import tracking_uri_for_cluster

    check_rungs(params)
    data_dir = (project_root / params.data.output_dir).resolve()
    stats = read_dataset_stats(data_dir)
    start_ray(project_root / LOG_DIR / "tune.log")
    # fail now, not in a trial, if the cluster cannot hold one trial's workers
    _, use_gpu = resolve_scaling(params.train, params.tune.workers_per_trial, "tune.workers_per_trial")
    check_trial_precision(params, use_gpu)
    uri = tracking_uri_for_cluster(project_root)
    client = MlflowClient(uri)
    tags = provenance.run_tags(project_root, params, "tune")
    parent_id = open_parent(client, params, project_root, tags, run_key(params, stats, "tune"))
    concurrency = max_concurrent(params, use_gpu)
    print(f"MLflow parent run {parent_id}; {params.tune.num_samples} trials, {concurrency} at a time; {summary(params)}")
    context = {"project_root": str(project_root.resolve()), "tracking_uri": uri,
               "parent_run_id": parent_id, "data_dir": str(data_dir), "use_gpu": use_gpu,
               "trial_tags": tags | {provenance.STAGE_TAG: "tune-trial"}}
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=params.model_dump(), context=context),
                                    trial_resources(params, use_gpu))
    # Tune's newer console output prints a header and paths even at verbose=0; the older one is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_PERIOD_S)
    # With num_to_keep, Tune saves the search's state at every trial checkpoint past it, and warns that
    # it may become a bottleneck: a state of a few kB each epoch is not one.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        results = search_tuner(params, project_root, parent_id, trainable, concurrency).fit()
        _close_children(client, parent_id, params.tune.epochs, results)
        best = _best(results, params)
    except BaseException as error:
        _close_children(client, parent_id, params.tune.epochs, [])
        client.set_terminated(parent_id, ended_status(error))
        raise
    runs.log_params(client, parent_id, {"best": best["overrides"]})
    runs.log_metrics(client, parent_id, {f"best_{params.tune.metric}": best["value"]}, step=0)
    best_run = _mark_best_child(client, parent_id, best)
    runs.set_tags(client, parent_id, {"ganseg.best_trial_id": best["trial_id"]} | best_run)
    client.log_dict(parent_id, best, "tune/best_config.json")
    client.set_terminated(parent_id, "FINISHED")
    write_json(best_config_path, best | {"mlflow_parent_run_id": parent_id})
    closing(f"best trial {best['trial_id']}: {params.tune.metric} = {best['value']:.4f} with {best['overrides']}")
    return best


def open_parent(client: MlflowClient, params: Params, project_root: Path, tags: dict, key: str) -> str:
    """The search's MLflow parent run: the unfinished one of the same `key` (runtime.resume),
    reopened, or a new one."""
    parent_id = reopened_run(client, params, key, "tune run")
    if parent_id:
        return parent_id
    parent_id = runs.create_run(
        client, params.mlflow.experiment, project_root, run_name=runs.run_name("tune"),
        tags=tags | {RUN_KEY_TAG: key}, params=params.model_dump(),
    )
    client.log_dict(parent_id, search_space_record(params), "tune/search_space.json")
    return parent_id


def search_tuner(params: Params, project_root: Path, parent_id: str, trainable, concurrency: int):
    """The search's Tuner: restored from its storage when an earlier attempt of `parent_id` left
    one there (finished trials kept, unfinished and failed ones continued), else a new one."""
    from ray import tune

    from pipeline.ray.runtime import ray_storage, run_storage

    storage = run_storage(params, project_root)
    name = f"tune-{parent_id[:8]}"
    experiment = storage.join(name)
    space = {key: to_domain(dim) for key, dim in params.tune.search_space.items()}
    if tune.Tuner.can_restore(experiment.path, storage_filesystem=experiment.filesystem):
        print(f"restoring the Ray Tune search from {experiment.uri}")
        quiet_optuna()
        return tune.Tuner.restore(experiment.path, trainable, resume_unfinished=True, resume_errored=True,
                                  param_space=space, storage_filesystem=experiment.filesystem)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=params.tune.metric, mode=params.tune.mode, num_samples=params.tune.num_samples,
            scheduler=make_scheduler(params), search_alg=make_searcher(params), max_concurrent_trials=concurrency,
            reuse_actors=True,  # a trial takes over a finished one's process: no second start-up and imports
        ),
        run_config=tune.RunConfig(
            name=name, **ray_storage(storage), verbose=0,
            callbacks=[TrialLines(params.tune.num_samples, params.tune.epochs)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=params.runtime.checkpoints_to_keep),
        ),
    )


def trial_line(done: int, total: int, epochs: int, overrides: dict, result: dict, seconds_left: float | None) -> str:
    """'trial 2/4  lr_g 0.00297  lambda_adv 0.03  6/6 epochs  loss_g 0.41  val mIoU 0.812  63 img/s  1m10s  ETA 2m'."""
    settings = "  ".join(f"{key.rsplit('.', 1)[-1]} {_short(value)}" for key, value in overrides.items())
    ran = result.get("epoch", 0)
    stopped = " (stopped early)" if stopped_early(ran, epochs) else ""
    took = f"  {duration(result['time_total_s'])}" if "time_total_s" in result else ""
    eta = f"  ETA {duration(seconds_left)}" if seconds_left else ""
    return f"trial {done}/{total}  {settings}  {ran}/{epochs} epochs{stopped}  {metrics_text(result)}{took}{eta}"


def stopped_early(epochs_run: int, epochs: int) -> bool:
    """Whether ASHA cut a finished trial short of its epochs."""
    return epochs_run < epochs


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class TrialLines(Callback):
    """One console line per finished trial, printed by the tune driver. Tune saves the count of
    finished trials with the search, so a resumed search counts on; the ETA comes from the trials
    finished since this driver started."""

    def __init__(self, total: int, epochs: int):
        self.total, self.epochs, self.done = total, epochs, 0
        self.setup()

    def setup(self, **info):
        self.started, self.done_here = time.monotonic(), 0

    def get_state(self) -> dict:
        return {"done": self.done}

    def set_state(self, state: dict) -> None:
        self.done = state["done"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done, self.done_here = self.done + 1, self.done_here + 1
        left = (time.monotonic() - self.started) / self.done_here * (self.total - self.done)
        print(trial_line(self.done, self.total, self.epochs, trial.config, trial.last_result or {}, left), flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done, self.done_here = self.done + 1, self.done_here + 1
        print(f"trial {self.done}/{self.total} failed: see {trial.error_file or trial.path}", file=sys.stderr, flush=True)


def _mark_best_child(client: MlflowClient, parent_id: str, best: dict) -> dict:
    """Tag the best trial's run and return the parent's pointer to it."""
    found = child_runs(client, parent_id, best["trial_id"])
    if not found:
        return {}
    runs.set_tags(client, found[0].info.run_id, {"ganseg.best_trial": "true"})
    return {"ganseg.best_run_id": found[0].info.run_id}


def _best(results, params: Params) -> dict:
    failed = [r for r in results if r.error]
    if len(failed) == len(results):
        raise RuntimeError(f"all {len(results)} tune trials failed; the first error:\n{failed[0].error}")
    for r in failed:
        log.warning("trial failed: %s", r.error)
    scored = [r for r in results if not r.error and params.tune.metric in (r.metrics or {})]
    best = scored[pick_best([(r.config, r.metrics[params.tune.metric]) for r in scored], params)]
    return {
        "overrides": dict(best.config),
        "metric": params.tune.metric,
        "value": float(best.metrics[params.tune.metric]),
        "trial_id": best.metrics.get("trial_id", ""),
        "epochs": int(best.metrics.get("epoch", 0)),
    }


def _close_children(client: MlflowClient, parent_id: str, epochs: int, results) -> None:
    """Give each trial's run its real outcome: FINISHED (tagged when ASHA stopped it early) or FAILED.
    A run already FINISHED stays as it is, and so does a FAILED one that has no result now."""
    by_trial = {r.metrics.get("trial_id"): r for r in results if r.metrics}
    for child in child_runs(client, parent_id):
        result = by_trial.get(child.data.tags.get(TRIAL_ID_TAG))
        failed = result is None or result.error
        if child.info.status == "FINISHED" or (failed and child.info.status == "FAILED"):
            continue
        if failed:
            client.set_terminated(child.info.run_id, "FAILED")
            continue
        backfill_epochs(client, child.info.run_id, result)
        runs.set_tags(client, child.info.run_id, outcome_tags(int(result.metrics.get("epoch", 0)), epochs))
        end_ms = int(result.metrics["timestamp"] * 1000) if "timestamp" in result.metrics else None
        client.set_terminated(child.info.run_id, "FINISHED", end_time=end_ms)


def outcome_tags(epochs_run: int, epochs: int) -> dict:
    """A finished trial's tags: the epochs it ran, and ganseg.stopped_early only where ASHA cut it short."""
    early = {"ganseg.stopped_early": "true"} if stopped_early(epochs_run, epochs) else {}
    return {"ganseg.epochs_run": epochs_run} | early


def backfill_epochs(client: MlflowClient, run_id: str, result) -> None:
    """Log the epochs Tune received but the trial's run lacks.

    Tune may stop a trial as soon as its last report arrives, before the worker has logged that
    epoch itself; Tune's own record of every report fills the gap.
    """
    from ray.tune.result import AUTO_RESULT_KEYS

    frame = result.metrics_dataframe
    if frame is None or "epoch" not in frame:
        return
    logged = {m.step for m in client.get_metric_history(run_id, "epoch")}
    bookkeeping = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "should_checkpoint"}
    for row in frame.to_dict("records"):
        epoch = int(row["epoch"])
        if epoch not in logged:
            metrics = {k: v for k, v in row.items() if k not in bookkeeping and not k.startswith("config/")}
            runs.log_metrics(client, run_id, metrics, step=epoch)
