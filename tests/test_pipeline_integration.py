"""End to end: a copy of the repo in a temp dir, `dvc repro` with tiny params, real Ray and MLflow."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

LEFT_BEHIND = {".venv", ".git", "runs", "models", "results", "mlartifacts", "mlruns", "mlflow.db",
               "__pycache__", ".pytest_cache", ".hypothesis", "prepared", "cache", "tmp", "dvc_plots"}

TINY = {
    "data.synthetic.num_images": 40,
    "data.synthetic.size": 32,
    "data.image_size": 32,
    "model.base_channels": 8,
    "model.disc_channels": 8,
    "train.epochs": 2,
    "train.num_workers": 2,
    "tune.num_samples": 2,
    "tune.epochs": 1,
    "tune.grace_period": 1,
    "evaluate.num_overlays": 2,
}


def set_dotted(tree: dict, dotted: str, value) -> None:
    *sections, last = dotted.split(".")
    for section in sections:
        tree = tree[section]
    tree[last] = value


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT, repo, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if n in LEFT_BEHIND])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in TINY.items():
        set_dotted(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run(["git", "init", "-q"], repo, env)
    result = run(["dvc", "repro"], repo, env)
    return repo, env, result


def test_repro_writes_lock_metrics_and_model(repro):
    repo, _, _ = repro
    assert (repo / "dvc.lock").is_file()
    metrics = json.loads((repo / "results/evaluation/metrics.json").read_text())
    assert 0.0 <= metrics["test"]["miou"] <= 1.0
    assert metrics["test"]["majority_baseline"]["miou"] > 0
    assert (repo / "models/generator.pt").is_file()
    assert len(list((repo / "results/evaluation/overlays").glob("*.png"))) == 2
    best = json.loads((repo / "results/tune/best_config.json").read_text())
    assert set(best["overrides"]) == {"train.lr_g", "train.lambda_adv"}


def test_dvc_metrics_show_and_nothing_to_redo(repro):
    repo, env, _ = repro
    shown = run(["dvc", "metrics", "show"], repo, env).stdout
    assert "test.miou" in shown and "test.mdice" in shown
    status = run(["dvc", "status"], repo, env).stdout
    assert "up to date" in status.lower()


def test_mlflow_holds_tune_parent_children_and_train_model(repro):
    repo, _, _ = repro
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ganseg")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {}
    for r in runs:
        by_stage.setdefault(r.data.tags.get("ganseg.stage"), []).append(r)
    (parent,) = by_stage["tune"]
    children = [r for r in by_stage["tune-trial"] if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == TINY["tune.num_samples"]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all(len(client.get_metric_history(r.info.run_id, "val_miou")) >= 1 for r in children)
    (train,) = by_stage["train"]
    assert train.info.status == "FINISHED"
    assert len(client.get_metric_history(train.info.run_id, "val_miou")) == TINY["train.epochs"]
    assert "test_miou" in train.data.metrics
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert any(m.source_run_id == train.info.run_id for m in models)
