"""Helpers for end-to-end tests: a throw-away copy of the project with tiny params, and the one
default `dvc repro` that the pipeline, MLflow-server and browser tests share (conftest.py's
`default_repro`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ganseg.dotted import set_dotted
from tests.conftest import ROOT, TELEMETRY_OFF

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


# The shared `dvc repro`: tiny, yet enough training to beat the majority-class predictor clearly
# (more images, a short moving average of the generator, learning rates that learn in a few epochs);
# train_synthetic trains on real + generated pairs; every epoch logs its pictures.
REPRO_SETTINGS = TINY | {
    "data.synthetic.num_images": 200,
    "train.epochs": 4,
    "train.ema_decay": 0.9,
    "train.synthetic.share": 0.5,
    "train.synthetic.drop_disagreeing": True,
    "tune.search_space": {
        "train.lr_g": {"type": "loguniform", "low": 0.002, "high": 0.005},
        "train.lambda_adv": {"type": "choice", "values": [0.01, 0.03, 0.1]},
    },
    "mlflow.log_images_every": 1,
}
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.org"}


@dataclass(frozen=True)
class Reproduced:
    """A git-committed copy of the project after `dvc repro` against an MLflow server: what the
    console showed, and what `dvc status` and `dvc metrics show` said right after (later tests may
    change the project)."""

    repo: Path
    env: dict
    tracking_uri: str
    commit: str
    console: subprocess.CompletedProcess
    status: str
    metrics: str
    ended_ms: int  # when dvc repro ended, in MLflow's clock

    def own_store_env(self) -> dict:
        """The environment without MLFLOW_TRACKING_URI: a copy's stages log to its own mlflow.db."""
        return {k: v for k, v in self.env.items() if k != "MLFLOW_TRACKING_URI"}

    def logged_runs(self, stage: str) -> list:
        """The MLflow runs of `stage` that this `dvc repro` logged (not later tests' runs)."""
        return [r for r in mlflow_runs(self.repo, stage, self.tracking_uri) if r.info.start_time <= self.ended_ms]


def reproduce(dest: Path, tracking_uri: str) -> Reproduced:
    repo = copy_project(dest, REPRO_SETTINGS)
    env = clean_env(MLFLOW_TRACKING_URI=tracking_uri, **GIT_IDENTITY)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "snapshot"], repo, env)
    commit = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    console = run(["dvc", "repro"], repo, env)
    return Reproduced(repo, env, tracking_uri, commit, console, status=run(["dvc", "status"], repo, env).stdout,
                      metrics=run(["dvc", "metrics", "show"], repo, env).stdout, ended_ms=int(time.time() * 1000))


def copy_reproduced(reproduced: Reproduced, dest: Path) -> Path:
    """A copy of the reproduced project, outputs, DVC cache and git included, to change freely;
    without Ray's run folders (`runs/`), so that every checkpoint in the copy is the copy's own."""
    shutil.copytree(reproduced.repo, dest, symlinks=True,
                    ignore=lambda folder, names: ["runs"] if Path(folder) == reproduced.repo else [])
    return dest


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
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "RAY_ADDRESS", "RAY_AUTH")) or k in TELEMETRY_OFF}
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


def mlflow_runs(repo: Path, stage: str, tracking_uri: str | None = None) -> list:
    """The runs of `stage` in the project's own MLflow store (its mlflow.db), or at `tracking_uri`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri or f"sqlite:///{repo / 'mlflow.db'}")
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
