"""`ray job submit` of the train stage to a real Ray head node on 127.0.0.1."""

import json
import secrets
import subprocess
import tempfile

import pytest

from tests.conftest import free_port
from tests.e2e import (
    TINY,
    clean_env,
    copy_project,
    mlflow_runs,
    prepare_project,
    submit,
)

pytestmark = pytest.mark.integration

NOT_NEEDED = {".git", ".ci", ".dvc", "data", "deploy", "docs", "tests", ".venv", "mlflow.db", "mlartifacts", "runs",
              "models", "results"}


@pytest.fixture(scope="module")
def head_node():
    """A 2-CPU head node with token auth; every process it started is killed afterwards."""
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray puts sockets under it
    dashboard = free_port()
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
         "--port", str(free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--temp-dir", temp_dir],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        head.kill()
        head.wait()
        # Ray starts some daemons in sessions of their own: find them by their temp dir.
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)


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
