"""End to end: the session's `dvc repro` of a copy of the repo with tiny params (tests/e2e.py's
REPRO_SETTINGS), real Ray and a real MLflow server; what DVC, MLflow and the console hold after it."""

import csv
import io
import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.e2e import REPRO_SETTINGS as SETTINGS
from tests.e2e import copy_reproduced, mlflow_runs, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repro(default_repro):
    return default_repro.repo, default_repro.env, default_repro.console


@pytest.fixture(scope="module")
def client(default_repro):
    return MlflowClient(default_repro.tracking_uri)


def test_repro_writes_lock_metrics_and_a_model_that_beats_the_majority_class(repro):
    repo, _, _ = repro
    assert (repo / "dvc.lock").is_file()
    test = json.loads((repo / "results/evaluation/metrics.json").read_text())["test"]
    majority = test["majority_baseline"]
    # all pixels one class: that class's IoU is its pixel share, every other class's is 0
    assert majority["miou"] == pytest.approx(majority["pixel_accuracy"] / 3, abs=1e-5)
    assert test["miou"] >= majority["miou"] + 0.1, f"mIoU {test['miou']}, the majority class's {majority['miou']}"
    assert (repo / "models/segmenter.pt").is_file()
    assert len(list((repo / "results/evaluation/overlays").glob("*.png"))) == 2
    best = json.loads((repo / "results/tune/best_config.json").read_text())
    assert set(best["overrides"]) == {"train.lr_g", "train.lambda_adv"}


def test_dvc_metrics_show_and_nothing_to_redo(default_repro):
    assert "test.miou" in default_repro.metrics and "test.mdice" in default_repro.metrics
    assert "up to date" in default_repro.status.lower()


def test_mlflow_holds_tune_parent_children_and_train_model(default_repro, client):
    by_stage = {stage: default_repro.logged_runs(stage)
                for stage in ("tune", "tune-trial", "train", "train_synthetic", "train_imagegen")}
    (parent,) = by_stage["tune"]
    children = [r for r in by_stage["tune-trial"] if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == SETTINGS["tune.num_samples"]
    runs = [r for stage_runs in by_stage.values() for r in stage_runs]
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all(len(client.get_metric_history(r.info.run_id, "val_miou")) >= 1 for r in children)
    (train,) = by_stage["train"]
    assert train.info.status == "FINISHED"
    assert len(client.get_metric_history(train.info.run_id, "val_miou")) == SETTINGS["train.epochs"]
    assert "test_miou" in train.data.metrics
    experiment = client.get_experiment_by_name("ganseg")
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert any(m.source_run_id == train.info.run_id for m in models)


def test_console_shows_our_progress_and_leaves_ray_output_in_the_stage_logs(repro):
    repo, _, result = repro
    console = result.stdout + result.stderr
    # a line Ray prints at each checkpoint: Ray Tune's in a trial, Ray Train's in a worker group
    ray_lines = {"tune": "Checkpoint successfully created at", "train": "TrainingReport(",
                 "train_synthetic": "TrainingReport("}
    assert not any(line in console for line in ray_lines.values())
    for stage, line in ray_lines.items():
        log = f"results/logs/{stage}.log"
        assert f"Ray's log: {log}" in result.stdout
        assert line in (repo / log).read_text()  # Ray's output went there instead
    epochs, trials = SETTINGS["train.epochs"], SETTINGS["tune.num_samples"]
    assert [line.split()[2] for line in result.stdout.splitlines() if line.startswith("segmenter epoch ")] == [
        f"{e}/{epochs}" for e in range(1, epochs + 1)
    ] * 2  # train, then train_synthetic
    assert f"trial {trials}/{trials}  " in result.stdout
    imagegen_epochs = SETTINGS["imagegen.epochs"]
    assert [line.split()[3] for line in result.stdout.splitlines() if line.startswith("image generator epoch ")] == [
        f"{e}/{imagegen_epochs}" for e in range(1, imagegen_epochs + 1)
    ]
    assert "TrainingReport(" in (repo / "results/logs/train_imagegen.log").read_text()


def test_the_local_runtime_starts_no_preemption_watcher(repro):
    """One machine has no node an autoscaler could drain (pipeline/ray/cluster.py): no training run
    starts Ray Train's preemption watcher, whose actor names itself in the stage log when it does."""
    repo, _, _ = repro
    for stage in ("tune", "train", "train_imagegen", "train_synthetic"):
        assert "PreemptionWatcher" not in (repo / f"results/logs/{stage}.log").read_text(), stage


def test_the_image_generator_stages_log_one_run_with_grids_and_crown_a_champion(default_repro, client):
    repo = default_repro.repo
    (run_,) = default_repro.logged_runs("train_imagegen")
    assert run_.info.status == "FINISHED"
    epochs = SETTINGS["imagegen.epochs"]
    assert [m.step for m in client.get_metric_history(run_.info.run_id, "val_judge_miou")] == list(range(1, epochs + 1))
    for key in ("test_judge_miou_ratio", "test_kid", "test_diversity", "test_memorisation_ratio"):
        assert key in run_.data.metrics
    logged = {a.path for a in client.list_artifacts(run_.info.run_id, "training/samples")}
    assert f"training/samples/epoch_{epochs:04d}.png" in logged
    assert [a.path for a in client.list_artifacts(run_.info.run_id, "evaluation")] == ["evaluation/samples.png"]
    champion = client.get_model_version_by_alias("ganseg-image-generator", "champion")
    assert champion.run_id == run_.info.run_id
    assert float(champion.tags["judge_miou_ratio"]) == pytest.approx(run_.data.metrics["test_judge_miou_ratio"], abs=1e-6)
    metrics = json.loads((repo / "results/imagegen/metrics.json").read_text())
    evaluated = json.loads((repo / "results/evaluation/metrics.json").read_text())["test"]["miou"]
    # the judge is the pipeline's segmenter: on the real test tiles it scores about what evaluate found
    # at full size with flips (0.458 and 0.467 in one run)
    assert metrics["judge_miou_real"] == pytest.approx(evaluated, abs=0.05)
    assert metrics["diversity"] > 0
    assert (repo / "image_generator/imagegen.json").is_file() and (repo / "results/imagegen/samples.png").is_file()


def test_generate_draws_from_the_registered_champion_a_folder_prepare_accepts(repro, tmp_path):
    repo, env, _ = repro
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 3, (40, 24), dtype=np.uint8)).save(masks / f"m{i}.png")
    out = tmp_path / "drawn"
    run(["ganseg", "generate", "--model", "models:/ganseg-image-generator@champion", "--masks", str(masks),
         "--output", str(out), "--samples", "2"], repo, env)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["m0_0.png", "m0_1.png", "m1_0.png", "m1_1.png"]
    assert Image.open(out / "images/m0_0.png").size == (24, 40)
    run(["ganseg", "prepare", "--set", f"data.source={out}", "--set", "data.fit=resize",
         "--set", f"data.output_dir={tmp_path / 'prepared'}"], repo, env)
    assert (tmp_path / "prepared/stats.json").is_file()


def test_train_synthetic_trains_on_generated_pairs_and_is_scored_beside_the_train_stage(default_repro, client):
    repo, result = default_repro.repo, default_repro.console
    (synthetic,) = default_repro.logged_runs("train_synthetic")
    assert synthetic.info.status == "FINISHED"
    assert synthetic.data.params["train.synthetic.share"] == "0.5"
    history = client.get_metric_history(synthetic.info.run_id, "voided_share")  # the judge dropped pixels
    assert [m.step for m in history] == list(range(1, SETTINGS["train.epochs"] + 1))
    assert "test_miou" in synthetic.data.metrics
    metrics = json.loads((repo / "results/synthetic/metrics.json").read_text())
    train_miou = json.loads((repo / "results/evaluation/metrics.json").read_text())["test"]["miou"]
    compared = metrics["compared_with_train_stage"]
    assert compared["test_miou"] == train_miou
    assert compared["difference"] == pytest.approx(metrics["test"]["miou"] - train_miou)
    assert f"({compared['difference']:+.4f})" in result.stdout
    card = json.loads((repo / "models_synthetic/model.json").read_text())
    assert card["mlflow_run_id"] == synthetic.info.run_id and card["registered_model_version"]


def test_dvc_metrics_show_lists_the_image_generator_and_the_synthetic_comparison(default_repro):
    assert "judge_miou_ratio" in default_repro.metrics
    assert "compared_with_train_stage.difference" in default_repro.metrics


@pytest.fixture(scope="module")
def committed(default_repro, tmp_path_factory):
    """A copy of the reproduced project committed to git, its DVC outputs pushed to a local-folder
    remote that the commit names as the default (as a team shares results); MLflow in the
    project's own store (mlflow.db), as without MLFLOW_TRACKING_URI."""
    repo = copy_reproduced(default_repro, tmp_path_factory.mktemp("committed") / "repo")
    env = default_repro.own_store_env()
    remote = tmp_path_factory.mktemp("dvc-remote")
    run(["dvc", "remote", "add", "--default", "shared", str(remote)], repo, env)
    run(["dvc", "push"], repo, env)
    run(["git", "add", "--all"], repo, env)
    run(["git", "commit", "-q", "-m", "reproduced"], repo, env)  # the env names the committer
    return repo, env, remote


def test_a_fresh_clone_pulls_every_output_and_predicts_without_training(committed, tmp_path):
    repo, env, remote = committed
    assert sorted(p.name for p in remote.iterdir()) == ["files"]  # the pushed cache
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "models").exists() and (clone / "results/evaluation/metrics.json").is_file()
    run(["dvc", "pull"], clone, env)
    assert "up to date" in run(["dvc", "status"], clone, env).stdout.lower()
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone, env).stdout)
    figures = shown[""]["data"]["results/evaluation/metrics.json"]["data"]["test"]
    assert figures == json.loads((repo / "results/evaluation/metrics.json").read_text())["test"]
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(images / "a.png")
    run(["ganseg", "predict", "--model", "models", "--input", str(images), "--output", str(tmp_path / "masks")],
        clone, env)
    assert Image.open(tmp_path / "masks" / "a.png").size == (48, 40)
    assert not (clone / "mlflow.db").exists() and not (clone / "runs").exists()  # nothing was trained


def test_a_queued_experiment_logs_to_the_project_store_and_shows_its_test_miou(committed):
    """A queued experiment that changes a param tune reads: tune (one trial), train and evaluate rerun
    in DVC's queue. (Which stages each param reaches is tests/test_dvc_pipeline.py's matter.)"""
    repo, env, _ = committed
    run(["dvc", "exp", "run", "--queue", "--name", "lr-high", "--set-param", "train.lr_g=0.004", "--set-param",
         "tune.num_samples=1", "evaluate"], repo, env)
    run(["dvc", "exp", "run", "--run-all"], repo, env, timeout=1800)
    table = list(csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], repo, env).stdout)))
    (experiment,) = [row for row in table if row["Experiment"] == "lr-high"]
    (workspace,) = [row for row in table if row["rev"] == "workspace"]
    # DVC names a metric by its file too when two metrics files hold the same key
    (miou,) = [c for c in table[0] if c in ("test.miou", "results/evaluation/metrics.json:test.miou")]
    assert float(experiment["train.lr_g"]) == 0.004 and float(experiment["tune.num_samples"]) == 1
    assert float(experiment[miou]) != float(workspace[miou])  # the experiment scored a model of its own
    tune, train = ({r.data.tags.get("ganseg.dvc_experiment"): r for r in mlflow_runs(repo, stage)}
                   for stage in ("tune", "train"))
    assert set(tune) == set(train) == {"lr-high"}, (set(tune), set(train))
    assert tune["lr-high"].info.status == train["lr-high"].info.status == "FINISHED"
    # the tune run records the experiment's params
    assert float(tune["lr-high"].data.params["train.lr_g"]) == 0.004
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("*/mlflow.db"))  # no throw-away store
