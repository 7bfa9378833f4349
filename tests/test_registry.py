import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.registry import (
    CHAMPION,
    ModelSourceError,
    beats,
    download_model,
    find_model_folder,
    is_mlflow_uri,
    record_and_promote,
)


@pytest.mark.parametrize(
    "candidate, champion, expected",
    [(0.6, 0.5, True), (0.5, 0.5, False), (0.4, 0.5, False), (0.1, None, True), (0.1, float("nan"), True)],
)
def test_only_a_strictly_better_score_beats_the_champion(candidate, champion, expected):
    assert beats(candidate, champion) is expected


@pytest.fixture
def registry(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("seg")
    for _ in range(4):
        client.create_model_version("seg", source=(tmp_path / "model").as_uri())
    return client


def champion_of(client) -> str:
    return str(client.get_model_version_by_alias("seg", CHAMPION).version)


def test_champion_moves_only_on_a_strictly_better_test_miou(registry):
    assert "now the champion (no champion before)" in record_and_promote(registry, "seg", "1", 0.50)
    assert "alias unchanged" in record_and_promote(registry, "seg", "2", 0.40)
    assert "alias unchanged" in record_and_promote(registry, "seg", "3", 0.50)
    assert champion_of(registry) == "1"
    assert "was version 1 with 0.5000" in record_and_promote(registry, "seg", "4", 0.70)
    assert champion_of(registry) == "4"
    assert registry.get_model_version("seg", "2").tags["test_miou"] == "0.400000"


def test_re_evaluating_the_champion_keeps_it(registry):
    record_and_promote(registry, "seg", "2", 0.5)
    assert "already the champion" in record_and_promote(registry, "seg", "2", 0.3)
    assert champion_of(registry) == "2"


@pytest.mark.parametrize(
    "text, expected",
    [("models:/seg@champion", True), ("models:/seg/3", True), ("runs:/0123abcd/model", True),
     ("models", False), ("some/folder", False)],
)
def test_mlflow_uris_are_told_from_folders(text, expected):
    assert is_mlflow_uri(text) is expected


def test_the_model_folder_is_found_inside_the_downloaded_files(tmp_path):
    folder = tmp_path / "model" / "artifacts" / "model"  # where a logged model keeps the folder
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="no ganseg model"):
        find_model_folder(tmp_path)
    (folder / "generator.pt").write_bytes(b"")
    assert find_model_folder(tmp_path) == folder


def test_a_missing_local_store_is_reported_not_created(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ModelSourceError, match="no MLflow store"):
        download_model("models:/seg@champion", uri, tmp_path / "dl")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_image_generator_champion_is_chosen_by_its_own_score(registry):
    record_and_promote(registry, "seg", "1", 0.9, metric="judge_miou_ratio")
    message = record_and_promote(registry, "seg", "2", 0.8, metric="judge_miou_ratio")
    assert "judge mIoU ratio 0.8000" in message and "alias unchanged" in message
    assert champion_of(registry) == "1"
    assert registry.get_model_version("seg", "2").tags == {"judge_miou_ratio": "0.800000"}
