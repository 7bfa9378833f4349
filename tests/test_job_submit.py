"""`ray job submit` of the train stage to a real Ray head node on 127.0.0.1."""

import json
import secrets

import pytest

from tests.e2e import (
    TINY,
    clean_env,
    copy_project,
    mlflow_runs,
    prepare_project,
    submit,
)
from tests.servers import RayCluster

pytestmark = pytest.mark.integration

NOT_NEEDED = {".git", ".ci", ".dvc", "data", "deploy", "docs", "tests", ".venv", "mlflow.db", "mlartifacts", "runs",
              "models", "results"}


@pytest.fixture(scope="module")
def head_node():
    """A 2-CPU head node with token auth; every process it started is killed afterwards."""
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    head = RayCluster(1, env, cpus=2)
    yield head.address, env
    head.close()


def test_upload_is_the_code_params_and_top_level_files(tmp_path, head_node):
    address, env = head_node
    repo = copy_project(tmp_path / "repo", TINY)
    prepare_project(repo, clean_env())
    for output in (".venv", "models", "results", "runs", "mlartifacts"):  # as a user's folder holds them
        (repo / output).mkdir()
    (repo / "mlflow.db").write_text("a store")
    listing = "import json, os; print('UPLOADED', json.dumps({n: os.path.isdir(n) for n in os.listdir('.')}))"
    result = submit(address, ["--working-dir", ".", "--", "python", "-c", listing], env, cwd=repo)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    line = next(line for line in output.splitlines() if line.startswith("UPLOADED "))
    uploaded = json.loads(line.removeprefix("UPLOADED "))
    assert {"ganseg", "pipeline", "params.yaml"} <= set(uploaded)
    assert not NOT_NEEDED & set(uploaded), uploaded
    assert sorted(name for name, is_dir in uploaded.items() if is_dir) == ["ganseg", "pipeline"]


def test_train_stage_runs_as_a_ray_job(tmp_path, head_node):
    address, env = head_node
    repo = copy_project(tmp_path / "repo", TINY)
    prepare_project(repo, clean_env())
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}}  # as in the README
    result = submit(address, [
        "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env),
        "--", "python", "-m", "pipeline.cli", "train", "--root", str(repo),
    ], env, cwd=repo)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower()
    assert (repo / "models" / "segmenter.pt").is_file()
    assert (repo / "results" / "train_history.csv").is_file()
    (train,) = mlflow_runs(repo, "train")
    assert train.info.status == "FINISHED" and "val_miou" in train.data.metrics
