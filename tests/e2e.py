"""Helpers for end-to-end tests: a throw-away copy of the project with tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ganseg.dotted import set_dotted
from tests.conftest import ROOT

LEFT_BEHIND = {".venv", ".git", "runs", "models", "results", "mlartifacts", "mlruns", "mlflow.db", "dvc.lock",
               "__pycache__", ".pytest_cache", ".hypothesis", "prepared", "synthetic", "cache", "tmp", "dvc_plots",
               "image_generator", "models_synthetic", "config.local"}  # .dvc/config.local: this machine's remotes

TINY = {
    "data.synthetic.num_images": 40,
    "data.synthetic.size": 32,
    "data.image_size": 32,
    "model.base_channels": 8,
    "model.disc_channels": 8,
    "train.epochs": 2,
    "train.adv_warmup_epochs": 0,  # the default warm-up would leave the discriminator out of 2-epoch runs
    "train.num_workers": 2,
    "tune.num_samples": 2,
    "tune.epochs": 1,
    "tune.grace_period": 1,
    "evaluate.num_overlays": 2,
    "imagegen.epochs": 2,
    "imagegen.base_channels": 8,
    "imagegen.disc_channels": 8,
    "imagegen.samples": 2,
}


def copy_project(dest: Path, overrides: dict) -> Path:
    """The project's files (not its outputs, stores or .venv) in `dest`, params patched, git-initialised."""
    shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if n in LEFT_BEHIND])
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for key, value in overrides.items():
        set_dotted(params, key, value)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def clean_env(**extra: str) -> dict:
    """This environment without MLflow/Ray cluster settings, with the venv's tools on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS", "RAY_AUTH"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def run(cmd: list[str], cwd: Path, env: dict, timeout: int = 1200) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def prepare_project(repo: Path, env: dict) -> None:
    """The first two stages in `repo`: the built-in data written, then prepared."""
    for stage in ("synthesize", "prepare"):
        run(["ganseg", stage], repo, env)


def mlflow_runs(repo: Path, stage: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ganseg")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`ganseg.stage` = '{stage}'")


def submit(address: str, cmd: list[str], env: dict, cwd, attempts: int = 40) -> subprocess.CompletedProcess:
    """Submit and wait; retry while the head is still starting (no dashboard or job agent yet)."""
    for _ in range(attempts):
        result = subprocess.run(["ray", "job", "submit", "--address", address, *cmd], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=900)
        if result.returncode == 0 or not any(
            hint in result.stdout + result.stderr for hint in ("Failed to connect", "No available agent")
        ):
            return result
        time.sleep(3)
    return result
