"""End to end against a real `mlflow server` on a free loopback port: the session's `dvc repro`
(tests/e2e.py's REPRO_SETTINGS), checked through MLflow's client, predict from the registry, and
the UI in headless Chromium."""

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from pipeline.tracking.registry import CHAMPION
from tests.e2e import REPRO_SETTINGS as PARAMS
from tests.e2e import run

pytestmark = pytest.mark.integration

MODEL_NAME = "ganseg-segmenter"
CHROMIUM = Path(os.environ.get("GANSEG_CHROMIUM", "/usr/bin/chromium"))
RENDER_ATTEMPTS = 3


@pytest.fixture(scope="module")
def server(tracking_server):
    return tracking_server


@pytest.fixture(scope="module")
def pipeline(default_repro):
    """The session's dvc repro: tune, train, evaluate, the image generator, train_synthetic."""
    return default_repro


@pytest.fixture(scope="module")
def client(server):
    return MlflowClient(server)


@pytest.fixture(scope="module")
def runs(pipeline, client) -> dict[str, list]:
    """The runs of the session's dvc repro by stage, oldest first (not later tests' runs)."""
    experiment = client.get_experiment_by_name("ganseg")
    by_stage: dict[str, list] = {}
    for found in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"],
                                    filter_string=f"attributes.start_time <= {pipeline.ended_ms}"):
        by_stage.setdefault(found.data.tags["ganseg.stage"], []).append(found)
    return by_stage


def history(client, run_id: str, metric: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, metric)]


def artifact_files(client, run_id: str, path: str | None = None) -> set[str]:
    files = set()
    for entry in client.list_artifacts(run_id, path):
        files |= artifact_files(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return files


def test_experiment_lives_on_the_server_with_its_artifacts_proxied(pipeline, client):
    experiment = client.get_experiment_by_name("ganseg")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")


def test_experiment_is_tagged_as_model_training(pipeline, client):
    assert client.get_experiment_by_name("ganseg").tags["mlflow.experimentKind"] == "custom_model_development"


def prepared_md5(repo: Path) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (prepared,) = [o for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared"]
    return prepared["md5"]


def test_every_run_has_the_prepared_data_as_its_input(pipeline, runs):
    reproduced = pipeline
    md5 = prepared_md5(reproduced.repo)
    for logged in runs["train"] + runs["tune"] + runs["tune-trial"]:
        (used,) = logged.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == (f"synthetic@{md5[:8]}", md5), logged.info.run_name
        # one dataset record per name and digest in an experiment: the source where it was first logged
        assert str(reproduced.repo / "data" / "prepared") in used.dataset.source


def test_tune_parent_records_search_space_and_best_trial(pipeline, runs, client):
    (parent,) = runs["tune"]
    children = runs["tune-trial"]
    assert len(children) == PARAMS["tune.num_samples"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {"best.train.lr_g", "best.train.lambda_adv", "tune.search_space.train.lr_g.low"} <= parent.data.params.keys()
    space = json.loads(Path(client.download_artifacts(parent.info.run_id, "tune/search_space.json")).read_text())
    assert set(space["search_space"]) == {"train.lr_g", "train.lambda_adv"}
    best_run = parent.data.tags["ganseg.best_run_id"]
    (best,) = [c for c in children if c.info.run_id == best_run]
    assert parent.data.metrics["best_val_miou"] == pytest.approx(best.data.metrics["val_miou"])
    # The pick: of the trials within tune.tie_margin of the top (a run's metric is its last epoch's),
    # the one with the smallest λ_adv.
    margin = yaml.safe_load((pipeline.repo / "params.yaml").read_text())["tune"]["tie_margin"]
    top = max(c.data.metrics["val_miou"] for c in children)
    tied = [c for c in children if c.data.metrics["val_miou"] >= top - margin]
    assert best_run in {c.info.run_id for c in tied}
    adv = "overrides.train.lambda_adv"
    assert float(best.data.params[adv]) == min(float(c.data.params[adv]) for c in tied)
    assert [c.info.run_id for c in children if c.data.tags.get("ganseg.best_trial") == "true"] == [best_run]


def test_each_trial_has_its_own_curves_and_images(runs, client):
    epochs = PARAMS["tune.epochs"]
    for child in runs["tune-trial"]:
        for metric in ("val_miou", "loss_g", "lr_g"):
            assert history(client, child.info.run_id, metric) == list(range(1, epochs + 1)), metric
        assert f"training/overlays/epoch_{epochs:04d}.png" in artifact_files(client, child.info.run_id)


def test_train_runs_have_full_curves_tags_and_images(pipeline, runs, client):
    (train,) = runs["train"]
    epochs, run_id = PARAMS["train.epochs"], train.info.run_id
    assert train.info.status == "FINISHED" and train.info.run_name.startswith("train-")
    for metric in ("loss_g", "loss_d", "d_real", "d_fake", "val_miou", "val_dice_membrane", "lr_g", "lr_d",
                   "images_per_s", "waiting_for_data_share"):
        assert history(client, run_id, metric) == list(range(1, epochs + 1)), metric
    tags = train.data.tags
    assert tags["mlflow.source.git.commit"] == pipeline.commit and tags["ganseg.git_dirty"] in ("true", "false")
    assert tags["ganseg.data_md5"] == prepared_md5(pipeline.repo) and tags["ganseg.dataset"] == "synthetic"
    files = artifact_files(client, run_id)
    assert {f"training/overlays/epoch_{e:04d}.png" for e in range(1, epochs + 1)} <= files
    assert {"evaluation/confusion_matrix.png", "evaluation/per_class_iou.png", "model_card/model.json"} <= files
    assert "test_miou" in train.data.metrics
    assert train.data.params["train.epochs"] == str(epochs)
    grid = client.download_artifacts(run_id, "training/overlays/epoch_0002.png")
    assert Image.open(grid).size[0] > 3 * PARAMS["data.image_size"]


def test_every_train_run_registers_a_version_and_the_best_is_champion(pipeline, runs, client):
    training = sorted(runs["train"] + runs["train_synthetic"], key=lambda r: r.info.start_time)
    versions = sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    assert [v.run_id for v in versions] == [r.info.run_id for r in training]
    scores = [float(v.tags["test_miou"]) for v in versions]
    assert scores == pytest.approx([r.data.metrics["test_miou"] for r in training], abs=1e-6)
    champion = 0
    for index, score in enumerate(scores):  # strictly better moves the alias; a tie keeps it
        champion = index if score > scores[champion] else champion
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == versions[champion].version
    assert f"{MODEL_NAME} version {versions[-1].version}" in pipeline.console.stdout  # said by its evaluation


def test_the_registered_model_loads_and_segments_its_input_example(pipeline, server, client, tmp_path):
    """Loaded as MLflow loads it (pipeline/served.py with the logged ganseg package): its input
    example, a black image of the training tiles' size, gets a mask of that size."""
    import mlflow.pyfunc
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    location = client.get_model_version_download_uri(MODEL_NAME, "1")
    local = download_artifacts(artifact_uri=location, dst_path=str(tmp_path), tracking_uri=server)
    logged = Model.load(Path(local) / "MLmodel")
    assert logged.signature.inputs.input_names() == ["image"] and logged.signature.outputs.input_names() == ["mask"]
    example = logged.load_input_example(local)
    answer = mlflow.pyfunc.load_model(local).predict(example)
    mask = np.asarray(Image.open(io.BytesIO(answer["mask"][0])))
    size = PARAMS["data.image_size"]
    assert mask.shape == (size, size) and mask.dtype == np.uint8


def test_predict_from_the_registry_uri(pipeline, tmp_path):
    env = pipeline.env
    images = tmp_path / "new"
    images.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (90, 70), dtype=np.uint8)).save(images / "large.png")
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / "small.jpg")
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "masks"
    done = run(["ganseg", "predict", "--model", f"models:/{MODEL_NAME}@{CHAMPION}", "--input", str(images),
                "--output", str(out), "--overlays"], tmp_path, env)
    assert "skipped broken.png" in done.stdout and "wrote 2 masks" in done.stdout
    assert np.asarray(Image.open(out / "large.png")).shape == (90, 70)
    assert np.asarray(Image.open(out / "small.png")).shape == (20, 24)
    assert (out / "large_overlay.png").is_file()



def test_predict_from_a_run_uri_writes_the_masks_of_the_same_model_by_its_alias(pipeline, client, tmp_path):
    images = tmp_path / "new"
    images.mkdir()
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (40, 52), dtype=np.uint8)).save(images / "a.png")
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    masks = {}
    for uri in (f"models:/{MODEL_NAME}@{CHAMPION}", f"runs:/{champion.run_id}/model", f"runs:/{champion.run_id}"):
        out = tmp_path / f"masks{len(masks)}"
        run(["ganseg", "predict", "--model", uri, "--input", str(images), "--output", str(out)], tmp_path, pipeline.env)
        masks[uri] = (out / "a.png").read_bytes()
    assert len(set(masks.values())) == 1, "a run URI fetched another model than the alias"

# --- the UI in a real browser -------------------------------------------------------------------

def chromium(url: str, profile: Path, *options: str) -> str:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--window-size=1600,1200", *options, url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def page_text(dom: str) -> str:
    """What a reader sees: the DOM without styles, scripts and tags, whitespace collapsed."""
    visible = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", visible)))


def ui_number(value: float) -> str:
    """How MLflow's UI writes a metric between 0.001 and 10: rounded to 3 decimals, no trailing zeros."""
    assert 1e-3 <= abs(value) < 10
    return f"{round(value, 3):g}"


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium; .ci/run installs it)")
    return tmp_path_factory.mktemp("ui-screenshots")


def look(url: str, expected: list[str], screenshots: Path, name: str, capsys) -> str:
    """The page's text once everything expected shows, and a screenshot saved as <name>.png.

    The UI is a single-page app that fills in as its API calls return: a page read too early is
    read again, a bounded number of times.
    """
    profile, shot = screenshots / f"profile-{name}", screenshots / f"{name}.png"
    for _ in range(RENDER_ATTEMPTS):
        # One page load gives both the DOM and the picture: the screenshot shows what was checked.
        text = page_text(chromium(url, profile, "--dump-dom", f"--screenshot={shot}"))
        if all(item in text for item in expected):
            break
    assert Image.open(shot).size == (1600, 1200)
    extra = os.environ.get("GANSEG_UI_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(extra) / shot.name)
    with capsys.disabled():
        print(f"\n  {url}\n  screenshot: {shot}" + (f" (copied to {extra})" if extra else ""))
    missing = [item for item in expected if item not in text]
    assert not missing, f"{missing} not on the page; it reads:\n{text[:3000]}"
    return text


def test_experiment_page_shows_the_runs_and_their_curves(server, runs, client, screenshots, capsys):
    experiment = client.get_experiment_by_name("ganseg").experiment_id
    names = [r.info.run_name for r in runs["train"] + runs["tune"]]
    # Chart view: one chart per metric, each with a curve per run, labelled '<run name> (<metric>)'.
    curves = [f"{r.info.run_name} ({metric})" for r in runs["train"] for metric in ("loss_g", "d_real")]
    look(f"{server}/#/experiments/{experiment}/runs?compareRunsMode=CHART", names + curves, screenshots,
         "experiment", capsys)


def test_model_training_view_opens_the_experiment_on_its_runs_with_their_dataset(pipeline, server, runs, client,
                                                                               screenshots, capsys):
    """The link as the UI's Model training view makes it (MLflow 3.17 chooses the page by that view, which a
    fresh browser starts in GenAI, not by the experiment's kind tag)."""
    repo = pipeline.repo
    experiment = client.get_experiment_by_name("ganseg").experiment_id
    expected = [f"Runs - Experiment {experiment}", "Dataset", f"synthetic@{prepared_md5(repo)[:8]}"]
    expected += [r.info.run_name for r in runs["train"]]
    look(f"{server}/#/experiments/{experiment}?workflowType=machine_learning", expected, screenshots, "runs", capsys)


def test_compare_page_shows_both_runs_the_param_that_differs_and_metrics(server, runs, screenshots, capsys):
    """The train run beside a tune trial, which trains for tune.epochs."""
    (first,), second = runs["train"], runs["tune-trial"][0]
    ids = json.dumps([first.info.run_id, second.info.run_id])
    experiment = json.dumps([first.info.experiment_id])
    expected = [
        first.info.run_name, second.info.run_name,
        f"train.epochs {PARAMS['train.epochs']} {PARAMS['tune.epochs']}",  # the param row, one value per run
        "loss_g", ui_number(first.data.metrics["loss_g"]), ui_number(second.data.metrics["loss_g"]),
    ]
    look(f"{server}/#/compare-runs?runs={ids}&experiments={experiment}", expected, screenshots, "compare", capsys)
