"""The project on object storage, on a Ray cluster with no shared disk: a real S3-compatible server
(SeaweedFS) on 127.0.0.1, a real MLflow server proxying its artifacts there, and two Ray nodes, each
with a temp folder of its own. Stages go to the cluster with `ganseg submit` (`ray job submit`)
from a checkout that keeps no data and no models."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import threading
import time

import pytest
import yaml

from pipeline.stages.tune import STATE_SAVE_PERIOD_S
from tests.e2e import GIT_IDENTITY, TINY, clean_env, copy_project, mlflow_runs, run
from tests.servers import CREDENTIALS, ObjectStore, RayCluster, mlflow_server, stop

pytestmark = pytest.mark.integration

PROJECT = "project"  # GANSEG_STORE = s3://ganseg/project
EPOCHS = 4
PARAMS = TINY | {"train.epochs": EPOCHS, "tune.num_samples": 2, "train.num_workers": 2,
                 "tune.max_concurrent_trials": 1,  # so that the tune job can be stopped between its trials
                 "tune.epochs": 30, "tune.grace_period": 30,  # a trial long enough to be stopped in (no ASHA stop)
                 "data.ray_data": True, "data.synthetic.num_images": 130}  # three blocks of pairs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    server = ObjectStore(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracking(store, tmp_path_factory):
    env = clean_env(**CREDENTIALS, MLFLOW_S3_ENDPOINT_URL=store.endpoint, AWS_DEFAULT_REGION="us-east-1",
                    MLFLOW_DISABLE_TELEMETRY="true")
    url, process = mlflow_server(tmp_path_factory.mktemp("mlflow"), f"s3://{store.bucket}/mlartifacts", env)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def cluster(store, tracking):
    """Two nodes whose processes hold the bucket's credentials (as pods from a Secret); the
    submitting side holds none."""
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    nodes = RayCluster(2, clean_env(**auth), CREDENTIALS | store.env())
    yield nodes
    nodes.close()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, store, tracking, cluster):
    """A git checkout of the project and the environment `ganseg submit` runs in there."""
    repo = copy_project(tmp_path_factory.mktemp("checkout"), PARAMS)
    env = clean_env(**GIT_IDENTITY, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"], GANSEG_STORE=f"s3://{store.bucket}/{PROJECT}",
                    MLFLOW_TRACKING_URI=tracking, **store.env())
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "snapshot"], repo, env)
    return repo, env


def submit_stage(repo, env, *args: str, attempts: int = 40) -> str:
    """`ganseg submit <args>`, retried while the head is still starting; its output."""
    for _ in range(attempts):
        result = subprocess.run(["ganseg", "submit", *args], cwd=repo, env=env, capture_output=True, text=True,
                                timeout=1200)
        output = result.stdout + result.stderr
        if result.returncode == 0 or not any(h in output for h in ("Failed to connect", "No available agent")):
            break
        time.sleep(3)
    assert result.returncode == 0, output[-5000:]
    return output


def submit_tune_stopped_after_its_first_trial(repo, env, timeout_s: float = 900) -> str:
    """`ganseg submit tune`, its job stopped with `ray job stop` once the first trial has ended and
    Tune has saved its state to the bucket; what it printed."""
    job = subprocess.Popen(["ganseg", "submit", "tune"], cwd=repo, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while not any(line.startswith("trial 1/") for line in lines):
        assert job.poll() is None, "tune ended before it could be stopped:\n" + "".join(lines)[-4000:]
        assert time.monotonic() < deadline, "no trial ended in time:\n" + "".join(lines)[-4000:]
        time.sleep(0.5)
    time.sleep(float(STATE_SAVE_PERIOD_S) + 3)  # Tune has uploaded the first trial's end by now
    (job_id,) = re.findall(r"Job '(\S+)' submitted successfully", "".join(lines))
    run(["ray", "job", "stop", job_id], repo, env)
    job.wait(timeout=120)
    reader.join(timeout=10)
    return "".join(lines)


def folders(objects: dict[str, int], depth: int = 3) -> dict[str, int]:
    """Objects counted by their first `depth` path parts, for a transcript a person can read."""
    counted: dict[str, int] = {}
    for key in objects:
        folder = "/".join(key.split("/")[:depth])
        counted[folder] = counted.get(folder, 0) + 1
    return counted


@pytest.fixture(scope="module")
def pipeline(checkout, store):
    """prepare -> tune -> train (a worker killed at epoch 3) -> evaluate as Ray jobs; the bucket's
    folders after each stage, printed as the transcript."""
    repo, env = checkout
    outputs, after = {}, {}
    stages = [("synthesize",), ("prepare",), ("tune",),
              ("train", "--set", "runtime.fault_injection.at_epoch=3", "--set", "runtime.fault_injection.kill_rank=1"),
              ("evaluate",)]
    for args in stages:
        if args[0] == "tune":
            outputs["stopped tune"] = submit_tune_stopped_after_its_first_trial(repo, env)
        outputs[args[0]] = submit_stage(repo, env, *args)
        after[args[0]] = store.objects()
        print(f"after {args[0]}: {json.dumps(folders(after[args[0]]), indent=1)}")
    return repo, env, outputs, after


def test_every_stage_writes_its_outputs_to_the_bucket(pipeline):
    _, _, _, after = pipeline
    assert any(key.startswith(f"{PROJECT}/data/synthetic") for key in after["synthesize"])
    assert any(key.startswith(f"{PROJECT}/data/prepared") for key in after["prepare"])
    assert f"{PROJECT}/results/tune/best_config.json" in after["tune"]
    assert any(key.startswith(f"{PROJECT}/runs/ray") for key in after["tune"])  # the trials' checkpoints
    assert f"{PROJECT}/models/segmenter.pt" in after["train"]
    assert any(key.startswith("mlartifacts/") for key in after["train"])  # the logged model, through the server
    assert any(key.startswith(f"{PROJECT}/results/evaluation") for key in after["evaluate"])


def test_the_checkout_holds_only_what_dvc_tracks(pipeline):
    repo, _, _, _ = pipeline
    assert not (repo / "data" / "prepared").exists() and not (repo / "data" / "synthetic").exists()
    assert not (repo / "models").exists() and not (repo / "runs").exists() and not (repo / "mlflow.db").exists()


def test_a_stopped_tune_job_resubmitted_resumes_its_search_without_rerunning_finished_trials(pipeline, tracking):
    from mlflow.tracking import MlflowClient

    _, _, outputs, _ = pipeline
    assert "trial 2/" not in outputs["stopped tune"], outputs["stopped tune"][-4000:]
    resumed = outputs["tune"]
    assert "resuming tune run" in resumed and "restoring the Ray Tune search from s3://" in resumed, resumed[-4000:]
    assert "trial 1/" not in resumed and "trial 2/2" in resumed, resumed[-4000:]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("ganseg")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`ganseg.stage` = 'tune'")
    assert parent.info.status == "FINISHED" and f"resuming tune run {parent.info.run_id}" in resumed
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.`ganseg.stage` = 'tune-trial'")
    assert len({r.data.tags["ganseg.trial_id"] for r in trials}) == len(trials) == PARAMS["tune.num_samples"]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in trials)


def test_prepare_blocks_ran_on_both_nodes(pipeline):
    _, _, outputs, _ = pipeline
    assert "on 2 node(s)" in outputs["prepare"], outputs["prepare"][-3000:]


def test_objects_read_back_byte_for_byte_what_each_manifest_lists(pipeline, store):
    checked = 0
    for key in store.objects(f"{PROJECT}/.ganseg/manifests"):
        rel = key.removeprefix(f"{PROJECT}/.ganseg/manifests/").removesuffix(".json")
        with store.filesystem().open_input_stream(f"{store.bucket}/{key}") as stream:
            manifest = json.loads(stream.read())
        for name, entry in manifest["files"].items():
            object_key = f"{PROJECT}/{rel}/{name}" if name else f"{PROJECT}/{rel}"
            assert store.md5(object_key) == entry["md5"], object_key
            checked += 1
    assert checked > 20


def test_a_killed_worker_resumed_from_its_checkpoint_in_the_bucket_in_the_same_run(pipeline, tracking):
    from mlflow.tracking import MlflowClient

    repo, _, outputs, after = pipeline
    assert "fault injection: killing worker rank 1" in outputs["train"]
    assert "resumed from the checkpoint of epoch 2" in outputs["train"]
    assert any(key.startswith(f"{PROJECT}/runs/ray/train-") for key in after["train"])
    (train,) = mlflow_runs(repo, "train", tracking)
    assert train.info.status == "FINISHED"
    history = MlflowClient(tracking).get_metric_history(train.info.run_id, "val_miou")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))


def test_runs_carry_the_submitting_checkouts_commit(pipeline, tracking):
    repo, env, _, _ = pipeline
    commit = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    (train,) = mlflow_runs(repo, "train", tracking)
    assert train.info.status == "FINISHED"
    assert train.data.tags["mlflow.source.git.commit"] == commit
    assert train.data.tags["ganseg.git_dirty"] == "false"
    assert train.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: workers need no bucket credentials


def test_the_champion_predicts_on_the_submitting_side_through_the_server(pipeline, tmp_path):
    repo, env, _, _ = pipeline
    images = tmp_path / "images"
    run(["ganseg", "synthesize", "--root", str(tmp_path), "--set", "data.synthetic.num_images=3"], repo,
        {k: v for k, v in env.items() if k != "GANSEG_STORE"})
    (tmp_path / "data" / "synthetic" / "images").rename(images)
    run(["ganseg", "predict", "--model", "models:/ganseg-segmenter@champion", "--input", str(images),
         "--output", str(tmp_path / "masks")], repo, {k: v for k, v in env.items() if k != "GANSEG_STORE"})
    assert len(list((tmp_path / "masks").glob("*.png"))) == 3


def test_predict_reads_and_writes_the_bucket_on_both_nodes_byte_for_byte(pipeline, store, three_images, tmp_path):
    """`ganseg predict` as a Ray job: input and output folders on the store, a Ray Data worker on
    each node (one CPU, one thread); the masks are those that one process with one thread writes
    on the submitting side."""
    repo, env, _, _ = pipeline
    filesystem = store.filesystem()
    for path in sorted(three_images.iterdir()) * 3:  # enough files for both workers
        copy = f"{path.stem}_{len(store.objects('predict/in'))}{path.suffix}"
        with filesystem.open_output_stream(f"{store.bucket}/predict/in/{copy}") as stream:
            stream.write(path.read_bytes())
    output = submit_stage(repo, env, "predict", "--model", "models:/ganseg-segmenter@champion", "--input",
                          f"s3://{store.bucket}/predict/in", "--output", f"s3://{store.bucket}/predict/out")
    assert "Ray Data: 9 images on 2 worker(s), 2 node(s)" in output, output[-3000:]
    local = tmp_path / "in"
    local.mkdir()
    for key in store.objects("predict/in"):
        with filesystem.open_input_stream(f"{store.bucket}/{key}") as stream:
            (local / key.rsplit("/", 1)[1]).write_bytes(stream.read())
    submitting_side = {k: v for k, v in env.items() if k not in ("GANSEG_STORE", "RAY_ADDRESS")}
    submitting_side["OMP_NUM_THREADS"] = "1"  # as the workers: oneDNN picks its kernels by thread count
    run(["ganseg", "predict", "--model", "models:/ganseg-segmenter@champion", "--input", str(local), "--output",
         str(tmp_path / "masks")], repo, submitting_side)
    masks = sorted(path.name for path in (tmp_path / "masks").iterdir())
    assert sorted(key.rsplit("/", 1)[1] for key in store.objects("predict/out")) == masks
    for name in masks:
        with filesystem.open_input_stream(f"{store.bucket}/predict/out/{name}") as stream:
            assert stream.read() == (tmp_path / "masks" / name).read_bytes(), name


def test_training_survives_the_store_going_away_for_seconds(pipeline, store):
    """The server stopped mid-training and started again: training goes on (or stops with a clear
    message and resumes on a rerun); nothing half-written is taken for a checkpoint."""
    repo, env, _, _ = pipeline
    job = subprocess.Popen(["ganseg", "submit", "train", "--set", "train.epochs=4", "--set", "seed=7"], cwd=repo,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 900
    while not any("segmenter epoch 2/4" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.5)
    store.stop()
    time.sleep(5)
    store.start()
    job.wait(timeout=1200)
    reader.join(timeout=10)
    output = "".join(lines)
    if job.returncode != 0:  # stopped with a message: a rerun asked to resume starts from the last whole checkpoint
        assert "error" in output.lower(), output[-4000:]
        print("the store went away for 5 s: the train stage stopped with\n"
              + "\n".join(line for line in output.splitlines() if "rror" in line)[-2000:])
        output = submit_stage(repo, env, "train", "--set", "train.epochs=4", "--set", "seed=7", "--set",
                              "runtime.resume_failed=true")
        assert "resuming MLflow run" in output and "resumed from the checkpoint of epoch" in output, output[-4000:]
    else:
        print("the store went away for 5 s: the train stage went on and finished")
    # a failed first attempt may have saved its last epoch's checkpoint: the rerun then trains no epoch
    reached_the_last_epoch = "segmenter epoch 4/4" in output or "resumed from the checkpoint of epoch 4 " in output
    assert reached_the_last_epoch and "ganseg train finished" in output, output[-4000:]


def test_dvc_repro_tracks_the_manifests_and_reruns_what_changed(store, tracking, tmp_path):
    """dvc repro with the project on the store (the stages run here, Ray local): DVC records each
    folder output by its manifest, and a params change reruns exactly the stages it reaches."""
    repo = copy_project(tmp_path / "repo", TINY)
    env = clean_env(**GIT_IDENTITY, **CREDENTIALS, **store.env(), GANSEG_STORE=f"s3://{store.bucket}/dvc-project",
                    MLFLOW_TRACKING_URI=tracking)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "snapshot"], repo, env)
    run(["dvc", "repro", "prepare"], repo, env)
    first = json.loads((repo / "data" / "prepared" / "MANIFEST.json").read_text())
    assert [p.name for p in (repo / "data" / "prepared").iterdir()] == ["MANIFEST.json"]
    assert "data/prepared" in (repo / "dvc.lock").read_text()
    assert "Stage 'prepare' didn't change" in run(["dvc", "repro", "prepare"], repo, env).stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["synthetic"]["num_images"] = 48
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    rerun = run(["dvc", "repro", "prepare"], repo, env).stdout
    assert "Running stage 'synthesize'" in rerun and "Running stage 'prepare'" in rerun
    second = json.loads((repo / "data" / "prepared" / "MANIFEST.json").read_text())
    assert second != first
    assert len(store.objects("dvc-project/data/synthetic/images")) == 48
    assert "up to date" in run(["dvc", "status", "prepare"], repo, env).stdout.lower()
