"""Asking for more workers or GPUs than the Ray cluster has is an error at once, not a wait forever."""

import threading

import pytest

from ganseg.config import Params, ParamsError, TrainConfig
from pipeline.ray.runtime import ClusterResourcesError, scaling_for
from pipeline.stages.tune import check_trial_precision
from tests.conftest import prepare_dataset

CPUS_ONLY = {"CPU": 4.0, "memory": 8e9}
TWO_GPUS = {"CPU": 16.0, "GPU": 2.0}


def test_auto_uses_one_worker_per_gpu_else_per_cpu():
    assert scaling_for(CPUS_ONLY, TrainConfig()) == (4, False)
    assert scaling_for(TWO_GPUS, TrainConfig()) == (2, True)
    assert scaling_for(TWO_GPUS, TrainConfig(use_gpu=False)) == (16, False)
    assert scaling_for(CPUS_ONLY, TrainConfig(num_workers=3)) == (3, False)


def test_more_workers_than_cpus_names_param_request_and_cluster():
    with pytest.raises(ClusterResourcesError) as err:
        scaling_for(CPUS_ONLY, TrainConfig(num_workers=6))
    assert "train.num_workers = 6 needs 6 CPUs (one per worker) but the Ray cluster has 4" in str(err.value)


def test_more_workers_than_gpus():
    with pytest.raises(ClusterResourcesError, match="train.num_workers = 3 needs 3 GPUs .* has 2"):
        scaling_for(TWO_GPUS, TrainConfig(num_workers=3))


def test_gpu_asked_on_a_cluster_without_gpus():
    with pytest.raises(ClusterResourcesError, match="train.use_gpu is true but the Ray cluster has no GPU"):
        scaling_for(CPUS_ONLY, TrainConfig(use_gpu=True))


def test_the_error_names_the_param_that_asked():
    with pytest.raises(ClusterResourcesError, match="tune.workers_per_trial = 5 needs 5 CPUs"):
        scaling_for(CPUS_ONLY, TrainConfig(), 5, "tune.workers_per_trial")


FP16_IN_SEARCH = {"train.precision": {"type": "choice", "values": ["fp32", "fp16"]}}


def test_tune_refuses_fp16_on_cpus_from_params_or_the_search_space(tiny_params):
    with pytest.raises(ParamsError, match="train.precision: fp16 needs GPU workers"):
        check_trial_precision(tiny_params.with_overrides({"train.precision": "fp16"}), use_gpu=False)
    with pytest.raises(ParamsError, match="tune.search_space: train.precision may be fp16, which needs GPU workers"):
        check_trial_precision(tiny_params.with_overrides({"tune.search_space": FP16_IN_SEARCH}), use_gpu=False)


def test_tune_allows_fp16_on_gpus_and_a_search_space_without_it():
    fp16_searched = Params().with_overrides({"tune.search_space": FP16_IN_SEARCH})
    with pytest.raises(ParamsError):  # the same search on CPUs is refused ...
        check_trial_precision(fp16_searched, use_gpu=False)
    check_trial_precision(fp16_searched, use_gpu=True)  # ... on GPUs it is not
    bf16_only = {"train.precision": {"type": "choice", "values": ["bf16", "fp32"]}}
    with pytest.raises(ParamsError):  # fp16 in params, on CPUs, without a space that replaces it ...
        check_trial_precision(Params().with_overrides({"train.precision": "fp16"}), use_gpu=False)
    check_trial_precision(Params().with_overrides({"train.precision": "fp16", "tune.search_space": bf16_only}),
                          use_gpu=False)  # ... but every trial takes the space's precision


def outcome_within(seconds, function, *args):
    """What `function` raised or returned; a still-running call (Ray waiting for resources) fails the test."""
    box = {}

    def call():
        try:
            box["value"] = function(*args)
        except BaseException as err:  # handed to the test thread
            box["error"] = err

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no answer within {seconds} s: Ray is waiting for resources it will never get"
    return box


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["train", "tune"])
def test_real_cluster_too_small_fails_at_once(two_cpu_ray, tmp_path, tiny_params, stage):
    from pipeline.stages import train, tune

    params = tiny_params.with_overrides(
        {"train.num_workers": 3, "tune.workers_per_trial": 3, "data.output_dir": str(tmp_path / "prep")}
    )
    prepare_dataset(params.data, 0, tmp_path / "prep", progress=False)
    if stage == "train":
        outputs = (tmp_path / "best.json", tmp_path / "models", tmp_path / "h.csv")
        box = outcome_within(60, train.run, params, tmp_path, *outputs)
    else:
        box = outcome_within(60, tune.run, params, tmp_path, tmp_path / "best.json")
    key = "train.num_workers" if stage == "train" else "tune.workers_per_trial"
    assert isinstance(box.get("error"), ClusterResourcesError), box
    assert f"{key} = 3 needs 3 CPUs (one per worker) but the Ray cluster has 2" in str(box["error"])
    assert not (tmp_path / "models").exists() and not (tmp_path / "best.json").exists()


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["train", "tune"])
def test_real_cpu_cluster_refuses_fp16_at_once(two_cpu_ray, tmp_path, tiny_params, stage):
    from pipeline.stages import train, tune

    params = tiny_params.with_overrides({"data.output_dir": str(tmp_path / "prep")})
    prepare_dataset(params.data, 0, tmp_path / "prep", progress=False)
    if stage == "train":
        params = params.with_overrides({"train.precision": "fp16"})
        box = outcome_within(60, train.run, params, tmp_path, tmp_path / "best.json", tmp_path / "models", tmp_path / "h.csv")
    else:  # fp16 only as a value the search may pick
        params = params.with_overrides({"tune.search_space": FP16_IN_SEARCH})
        box = outcome_within(60, tune.run, params, tmp_path, tmp_path / "best.json")
    assert isinstance(box.get("error"), ParamsError), box
    assert "fp16" in str(box["error"]) and "needs GPU workers" in str(box["error"])
    assert not (tmp_path / "models").exists() and not (tmp_path / "best.json").exists()


def test_only_groups_of_ended_jobs_are_released():
    """A stopped job's group is released; a running or pending job's, a detached one and a removed
    one are left alone."""
    from types import SimpleNamespace as Record

    from pipeline.ray.cluster import held_by_ended_jobs

    jobs = [Record(job_id="01", status="STOPPED"), Record(job_id="02", status="RUNNING"),
            Record(job_id="03", status="PENDING"), Record(job_id="04", status="SUCCEEDED")]
    groups = [Record(placement_group_id=f"g{job}{state[0]}{int(detached)}", creator_job_id=job, state=state,
                     is_detached=detached)
              for job in ("01", "02", "03", "04") for state in ("CREATED", "REMOVED") for detached in (False, True)]
    assert held_by_ended_jobs(groups, jobs) == ["g01C0", "g04C0"]
