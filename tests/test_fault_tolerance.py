"""Training survives a killed worker and a killed driver, and MLflow keeps one unbroken run. Each
test starts from its own copy of the session's reproduced project (tests/e2e.py's REPRO_SETTINGS:
data prepared, every model trained), with MLflow in the copy's own store. The train stage's killed
worker is tested on a Ray cluster with object storage (tests/test_object_storage.py); here the joint
training restores a segmenter and an image generator together."""

import os
import signal
import subprocess
import tempfile
import time

import pytest
import yaml

from tests.e2e import REPRO_SETTINGS, copy_reproduced, mlflow_runs, run

pytestmark = pytest.mark.integration

EPOCHS = REPRO_SETTINGS["train.epochs"]


@pytest.fixture
def project(default_repro, tmp_path):
    """A copy of the reproduced project, and an environment whose MLflow is the copy's own mlflow.db."""
    repo = copy_reproduced(default_repro, tmp_path / "repo")
    return repo, default_repro.own_store_env()


def logged_steps(repo, run_id, metric: str = "val_miou") -> list[int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, metric)]


def train_with_a_killed_worker(repo, env, stage: str, rank: int, at_epoch: int, settings: tuple[str, ...] = ()):
    """Run `stage` (with the `--set` arguments `settings`) with one worker killed as `at_epoch` starts;
    check it resumed from the epoch before; its one MLflow run."""
    result = run(["ganseg", stage, *settings, "--set", f"runtime.fault_injection.at_epoch={at_epoch}",
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


def test_the_image_generator_stage_recovers_a_killed_worker_in_the_same_run(project):
    repo, env = project  # the reproduced segmenter is the judge
    imagegen = train_with_a_killed_worker(repo, env, "train-imagegen", rank=0, at_epoch=2)
    epochs = REPRO_SETTINGS["imagegen.epochs"]
    assert logged_steps(repo, imagegen.info.run_id, "val_judge_miou") == list(range(1, epochs + 1))
    assert (repo / "image_generator" / "image_generator.pt").is_file()


def test_joint_training_on_generated_pairs_recovers_both_generators_after_a_killed_worker(project):
    """train.synthetic.joint: the image generator trained alongside the segmenter is checkpointed
    with it, and restored with it."""
    repo, env = project  # the inputs of train-synthetic are there
    joint = ("--set", "train.synthetic.share=0.5", "--set", "train.synthetic.joint=true", "--set", "train.epochs=3")
    synthetic = train_with_a_killed_worker(repo, env, "train-synthetic", rank=0, at_epoch=2, settings=joint)
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


def test_rerun_after_killed_driver_resumes_instead_of_starting_over(project, ray_tmp):
    """`dvc repro train` after a params change that reaches train alone, killed (dvc, the stage
    and Ray) once an epoch is logged, then run again."""
    repo, env = project
    env = env | {"RAY_TMPDIR": ray_tmp}
    epochs = EPOCHS + 1
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    first = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_logged_epoch(repo, first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False)
    (interrupted,) = mlflow_runs(repo, "train")
    done_before = logged_steps(repo, interrupted.info.run_id)
    assert interrupted.info.status == "RUNNING" and 1 <= len(done_before) < epochs

    result = run(["dvc", "repro", "train"], repo, env)
    output = result.stdout + result.stderr
    assert "Running stage 'tune'" not in output  # upstream of train, unchanged
    assert f"resuming MLflow run {interrupted.info.run_id}" in output
    assert "resumed from the checkpoint of epoch" in output
    (train,) = mlflow_runs(repo, "train")
    assert train.info.run_id == interrupted.info.run_id and train.info.status == "FINISHED"
    assert logged_steps(repo, train.info.run_id) == list(range(1, epochs + 1))
    assert "up to date" in run(["dvc", "status", "train"], repo, env).stdout.lower()
