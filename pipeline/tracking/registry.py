"""The model registry: the champion rule, and turning a model URI into a local model folder.

Every train run registers a version under `mlflow.registered_model` (the image generator's train
run under `mlflow.registered_image_generator`). The evaluate stage tags the version with its score
(test mIoU; the judge mIoU ratio for an image generator) and moves the `champion` alias to it only
when it strictly beats the current champion's.
"""

from __future__ import annotations

import io
import math
import re
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Iterator

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganseg.contracts import MODEL_CARD
from ganseg.errors import GansegError
from ganseg.segmenter.export import MODEL_WEIGHTS, OLD_MODEL_WEIGHTS
from pipeline.tracking.runs import point_mlflow_at, require_reachable, tracking_uri

CHAMPION = "champion"
TEST_MIOU = "test_miou"  # the version tag (and train-run metric) the champion rule compares
MLFLOW_URI = re.compile(r"^[a-z][a-z0-9+.\-]*:/")
BARE_RUN_URI = re.compile(r"^runs:/([0-9a-f]+)/?$")


class ModelSourceError(GansegError, ValueError):
    """A --model argument that names no usable ganseg model; the message says why."""


def beats(candidate: float, champion: float | None) -> bool:
    """Strictly better: an equal score keeps the champion; anything beats a missing score."""
    if champion is None or math.isnan(champion):
        return True
    return candidate > champion


def _score_of(client: MlflowClient, version, metric: str) -> float | None:
    if metric in version.tags:
        return float(version.tags[metric])
    if version.run_id:  # a version registered before the rule existed: its run may hold the metric
        return client.get_run(version.run_id).data.metrics.get(metric)
    return None


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(err).lower():
            return None
        raise


def record_and_promote(client: MlflowClient, name: str, version: str, value: float, metric: str = TEST_MIOU) -> str:
    """Tag `version` with its score (`metric`, higher is better); move `champion` to it when it beats
    the current one. Says what happened."""
    version, label = str(version), metric.replace("_", " ").replace("miou", "mIoU")
    client.set_model_version_tag(name, version, metric, f"{value:.6f}")
    champion = current_champion(client, name)
    if champion is not None and str(champion.version) == version:
        return f"{name} version {version} is already the {CHAMPION} ({label} {value:.4f})"
    score = _score_of(client, champion, metric) if champion is not None else None
    if not beats(value, score):
        return (
            f"{name} version {version} ({label} {value:.4f}) does not beat the {CHAMPION}, "
            f"version {champion.version} ({score:.4f}): alias unchanged"
        )
    client.set_registered_model_alias(name, CHAMPION, version)
    before = "no champion before" if champion is None else f"was version {champion.version}"
    if champion is not None and score is not None:
        before += f" with {score:.4f}"
    return f"{name} version {version} ({label} {value:.4f}) is now the {CHAMPION} ({before})"


def is_mlflow_uri(text: str) -> bool:
    """models:/..., runs:/... and other MLflow artifact URIs, as opposed to a local folder."""
    return bool(MLFLOW_URI.match(text)) and not Path(text).exists()


SEGMENTER_FILES = (MODEL_CARD, (MODEL_WEIGHTS, OLD_MODEL_WEIGHTS))  # versions of older code hold generator.pt


def find_model_folder(root: Path, files: tuple[str, tuple[str, ...]] = SEGMENTER_FILES) -> Path:
    """The folder under `root` that holds a ganseg model card and its weights (`files`: the card's
    name and the weights file's possible names; the segmenter's by default)."""
    card_name, weights_names = files
    for card in sorted(root.rglob(card_name)):
        if any((card.parent / name).is_file() for name in weights_names):
            return card.parent
    raise ModelSourceError(f"no ganseg model ({card_name} + {weights_names[0]}) among the downloaded files in {root}")


def download_model(uri: str, tracking_uri: str, destination: Path,
                   files: tuple[str, tuple[str, ...]] = SEGMENTER_FILES) -> Path:
    """Download a models:/ or runs:/ URI and return the ganseg model folder inside it."""
    import mlflow.artifacts

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise ModelSourceError(
            f"no MLflow store at {tracking_uri} to fetch {uri} from: run where mlflow.db is, "
            "or set MLFLOW_TRACKING_URI to the tracking server"
        )
    bare_run = BARE_RUN_URI.match(uri)
    if bare_run:
        uri = f"runs:/{bare_run.group(1)}/model"
    point_mlflow_at(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
    except MlflowException as err:
        raise ModelSourceError(f"cannot fetch {uri} from {tracking_uri}: {err.message}") from None
    return find_model_folder(Path(local), files)


@contextmanager
def model_folder(model: str, project_root: Path,
                 files: tuple[str, tuple[str, ...]] = SEGMENTER_FILES) -> Iterator[Path]:
    """A model folder as given, or a models:/ or runs:/ URI's folder fetched into a temporary one
    from the project's tracking server."""
    if not is_mlflow_uri(model):
        yield Path(model)
        return
    with tempfile.TemporaryDirectory(prefix="ganseg-model-") as scratch:
        uri = tracking_uri(project_root)
        require_reachable(uri)
        folder = download_model(model, uri, Path(scratch), files)
        print(f"model {model} fetched from {uri}")
        yield folder


SERVED_MODEL_CODE = Path(__file__).resolve().parents[1] / "served.py"
# What pipeline/served.py and the part of ganseg it uses import; pinned to the versions trained with.
SERVED_REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pydantic", "pandas", "pyyaml", "tqdm", "kornia")


def served_signature(kind: str, flips: bool):
    """The REST contract of pipeline/served.py: file bytes in (base64 in JSON), PNG bytes out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    if kind == "segmenter":
        return ModelSignature(Schema([ColSpec("binary", "image")]), Schema([ColSpec("binary", "mask")]),
                              ParamSchema([ParamSpec("flips", "boolean", flips)]))
    return ModelSignature(
        Schema([ColSpec("binary", "mask")]),
        Schema([ColSpec("long", "mask_row"), ColSpec("long", "sample"), ColSpec("binary", "image")]),
        ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("samples", "long", 1)]),
    )


def served_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVED_REQUIREMENTS]


def log_and_register(uri: str, run_id: str, servable, max_image_pixels: int, flips: bool,
                     registered_name: str) -> str:
    """Log the exported folder of `servable` (ganseg.jobs.base.Servable) to the run as an MLflow
    pyfunc model that serves it (pipeline/served.py, with the `ganseg` package as its code),
    register it as a new version of `registered_name`, and return that version."""
    import mlflow
    import pandas as pd

    import ganseg

    column = "image" if servable.kind == "segmenter" else "mask"
    point_mlflow_at(uri)
    with mlflow.start_run(run_id=run_id), _without_mlflow_notes():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVED_MODEL_CODE),
            artifacts={"model": str(servable.folder)},
            code_paths=[str(Path(ganseg.__file__).parent)],
            model_config={"kind": servable.kind, "max_image_pixels": max_image_pixels},
            signature=served_signature(servable.kind, flips),
            input_example=pd.DataFrame({column: [servable.example]}),
            pip_requirements=served_requirements(),
            registered_model_name=registered_name,
        )
    version = str(info.registered_model_version)
    return version


# What MLflow prints while it logs and registers a model that our own line below says better.
MLFLOW_NOTES = re.compile(r"Validating input example against model signature|Successfully registered model"
                          r"|Registered model '.*' already exists|Created version '")


@contextmanager
def _without_mlflow_notes() -> Iterator[None]:
    """MLflow's messages on stderr, less MLFLOW_NOTES; all of them if the block fails."""
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    lines = captured.getvalue().splitlines(keepends=True)
    sys.stderr.writelines(line for line in lines if not MLFLOW_NOTES.search(line))
