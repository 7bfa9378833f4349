"""Training survives a killed worker and a killed driver, and MLflow keeps one unbroken run."""

import os
import signal
import subprocess
import tempfile
import time

import pytest

from tests.e2e import TINY, clean_env, copy_project, mlflow_runs, prepare_project, run

pytestmark = pytest.mark.integration

EPOCHS = 4
PARAMS = TINY | {"train.epochs": EPOCHS, "tune.num_samples": 1, "tune.search_space": {}}


def logged_steps(repo, run_id, metric: str = "val_miou") -> list[int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, metric)]


def train_with_a_killed_worker(repo, env, stage: str, rank: int, at_epoch: int):
    """Run `stage` with one worker killed as `at_epoch` starts; check it resumed from the epoch
    before; its one MLflow run."""
    result = run(["ganseg", stage, "--set", f"runtime.fault_injection.at_epoch={at_epoch}",
                  "--set", f"runtime.fault_injection.kill_rank={rank}"], repo, env)
    output = result.stdout + result.stderr
    assert f"fault injection: killing worker rank {rank}" in output
    assert f"resumed from the checkpoint of epoch {at_epoch - 1}" in output
    (logged,) = mlflow_runs(repo, stage.replace("-", "_"))
    assert logged.info.status == "FINISHED"
    return logged


@pytest.fixture
def ray_tmp():
    """A private Ray temp dir (short: it holds sockets), so this test's Ray processes can be found."""
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield folder
    subprocess.run(["pkill", "-9", "-f", folder], check=False)


def test_killed_worker_resumes_from_checkpoint_in_the_same_run(tmp_path):
    repo = copy_project(tmp_path / "repo", PARAMS)
    env = clean_env()
    prepare_project(repo, env)
    train = train_with_a_killed_worker(repo, env, "train", rank=1, at_epoch=3)
    assert logged_steps(repo, train.info.run_id) == list(range(1, EPOCHS + 1))
    assert (repo / "models" / "segmenter.pt").is_file()


def test_the_image_generator_stage_recovers_a_killed_worker_in_the_same_run(tmp_path):
    repo = copy_project(tmp_path / "repo", PARAMS | {"train.epochs": 1, "imagegen.epochs": 3})
    env = clean_env()
    prepare_project(repo, env)
    run(["ganseg", "train"], repo, env)  # the judge
    imagegen = train_with_a_killed_worker(repo, env, "train-imagegen", rank=0, at_epoch=2)
    assert logged_steps(repo, imagegen.info.run_id, "val_judge_miou") == [1, 2, 3]
    assert (repo / "image_generator" / "image_generator.pt").is_file()


def test_joint_training_on_generated_pairs_recovers_both_generators_after_a_killed_worker(tmp_path):
    """train.synthetic.joint: the image generator trained alongside the segmenter is checkpointed
    with it, and restored with it."""
    repo = copy_project(tmp_path / "repo", PARAMS | {"train.epochs": 1, "imagegen.epochs": 1})
    env = clean_env()
    for stage in ("synthesize", "prepare", "train", "evaluate", "train-imagegen"):  # the inputs of train-synthetic
        run(["ganseg", stage], repo, env)
    joint = ["--set", "train.synthetic.share=0.5", "--set", "train.synthetic.joint=true", "--set", "train.epochs=3"]
    result = run(["ganseg", "train-synthetic", *joint, "--set", "runtime.fault_injection.at_epoch=2"], repo, env)
    assert "resumed from the checkpoint of epoch 1" in result.stdout + result.stderr
    (synthetic,) = mlflow_runs(repo, "train_synthetic")
    assert synthetic.info.status == "FINISHED"
    assert logged_steps(repo, synthetic.info.run_id) == [1, 2, 3]
    assert logged_steps(repo, synthetic.info.run_id, "imagegen_loss_joint") == [1, 2, 3]
    checkpoints = list((repo / "runs" / "ray").glob("train_synthetic-*/checkpoint_*/joint_image_generator.pt"))
    assert checkpoints, "the joint image generator is saved in every checkpoint"
    assert (repo / "models_synthetic" / "segmenter.pt").is_file()


def wait_for_logged_epoch(repo, process, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "dvc repro ended before it could be interrupted"
        # Read MLflow only once training has checkpointed: the store exists by then.
        if list((repo / "runs" / "ray").glob("train-*/checkpoint_*")):
            runs = mlflow_runs(repo, "train")
            if runs and logged_steps(repo, runs[0].info.run_id):
                return
        time.sleep(2)
    raise TimeoutError("training logged no epoch in time")


def test_rerun_after_killed_driver_resumes_instead_of_starting_over(tmp_path, ray_tmp):
    repo = copy_project(tmp_path / "repo", PARAMS)
    env = clean_env(RAY_TMPDIR=ray_tmp)
    first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_logged_epoch(repo, first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False)
    (interrupted,) = mlflow_runs(repo, "train")
    done_before = logged_steps(repo, interrupted.info.run_id)
    assert interrupted.info.status == "RUNNING" and 1 <= len(done_before) < EPOCHS

    result = run(["dvc", "repro"], repo, env)
    output = result.stdout + result.stderr
    assert f"resuming MLflow run {interrupted.info.run_id}" in output
    assert "resumed from the checkpoint of epoch" in output
    (train,) = mlflow_runs(repo, "train")
    assert train.info.run_id == interrupted.info.run_id and train.info.status == "FINISHED"
    assert logged_steps(repo, train.info.run_id) == list(range(1, EPOCHS + 1))
    assert (repo / "results" / "evaluation" / "metrics.json").is_file()
