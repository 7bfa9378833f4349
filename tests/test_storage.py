"""Storage locations (pipeline/storage.py) and the project store's pull and push (pipeline/store.py),
on local folders standing in for a bucket: the same pyarrow calls, no server."""

import json
import pickle

import pyarrow.fs as pafs
import pytest

from ganseg.config import Params
from pipeline.storage import PatientS3FileSystem, StorageError, location
from pipeline.store import (
    LOCAL_MANIFEST,
    MANIFESTS,
    StoreError,
    manifest_of,
    pull,
    push,
    stage_on_store,
    stage_paths,
)
from tests.conftest import ROOT


def test_an_s3_uri_with_endpoint_options_joins_run_folders_on_the_path_not_after_the_query(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    runs = location("s3://ganseg/runs?endpoint_override=minio.example:9000&scheme=http")
    assert isinstance(runs.filesystem, pafs.S3FileSystem)
    assert runs.join("train-abc").path == "ganseg/runs/train-abc"
    assert runs.join("train-abc").uri == "s3://ganseg/runs/train-abc"
    assert _options(runs.filesystem)["endpoint_override"] == "minio.example:9000"
    assert _options(runs.filesystem)["scheme"] == "http"


def test_the_endpoint_comes_from_aws_endpoint_url_when_the_uri_has_none(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert _options(location("s3://bucket/project").filesystem)["endpoint_override"] == "127.0.0.1:8333"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example:9000")
    options = _options(location("s3://bucket/project").filesystem)
    assert (options["endpoint_override"], options["scheme"]) == ("s3.example:9000", "https")


def test_a_store_filesystem_pickles_without_credentials(monkeypatch):
    """Ray sends the filesystem to every worker: what it sends holds no key, each node uses its own."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    filesystem = location("s3://bucket/project").filesystem
    shipped = pickle.dumps(filesystem)
    assert b"AKIAEXAMPLE" not in shipped and b"very-secret" not in shipped
    assert _options(pickle.loads(shipped)).get("access_key") is None


def test_a_store_filesystem_keeps_its_retries_when_ray_ships_it(monkeypatch):
    """A store that is away for seconds: every process that Ray sends the filesystem to retries too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    shipped = pickle.loads(pickle.dumps(location("s3://bucket/project").filesystem))
    assert isinstance(shipped, PatientS3FileSystem)
    assert _options(shipped)["endpoint_override"] == "127.0.0.1:9"


def _options(filesystem) -> dict:
    """The settings a store's filesystem pickles with (what Ray ships to workers)."""
    return filesystem.__reduce__()[1][0]


@pytest.mark.parametrize("uri", ["s3://bucket/p?access_key=AKIA&secret_key=x", "s3://AKIA:secret@bucket/p"])
def test_credentials_in_a_storage_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID") as caught:
        location(uri)
    assert "secret" not in str(caught.value).replace("AWS_SECRET_ACCESS_KEY", "")


@pytest.mark.parametrize("uri, message", [("ftp://host/x", "unsupported storage scheme"), ("s3:///x", "no bucket"),
                                          ("s3://b/x?colour=red", "unknown storage URI option")])
def test_bad_storage_uris_say_what_is_wrong(uri, message):
    with pytest.raises(StorageError, match=message):
        location(uri)


def test_a_relative_local_path_is_taken_below_its_base(tmp_path):
    found = location("runs/ray", base=tmp_path)
    assert found.is_local and found.path == str(tmp_path / "runs" / "ray")


def test_stage_paths_are_dvc_yamls_data_deps_and_outputs_with_params_filled_in():
    params = Params.model_validate({"data": {"source": "mine/data", "output_dir": "data/tiles"}})
    reads, writes = stage_paths("train", params, ROOT)
    assert reads == ["data/tiles", "results/tune/best_config.json"]
    assert writes == ["models", "results/train_history.csv"]
    assert stage_paths("prepare", params, ROOT)[0] == ["mine/data"]
    assert stage_paths("predict", params, ROOT) is None  # no DVC stage: runs where it is


def _folder(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_pull_gives_what_push_wrote_and_a_second_push_drops_files_no_longer_there(tmp_path):
    store, work, copy = location(tmp_path / "bucket"), tmp_path / "work", tmp_path / "copy"
    _folder(work / "models", {"a.pt": b"1" * 100, "sub/b.json": b"{}"})
    push(work, store, "models")
    pull(store, "models", copy)
    assert manifest_of(copy / "models") == manifest_of(work / "models")

    (work / "models" / "sub" / "b.json").unlink()
    _folder(work / "models", {"a.pt": b"2" * 100})
    push(work, store, "models")
    assert not (tmp_path / "bucket" / "models" / "sub" / "b.json").exists()
    pull(store, "models", copy)
    assert sorted(p.name for p in (copy / "models").rglob("*") if p.is_file()) == ["a.pt"]
    assert (copy / "models" / "a.pt").read_bytes() == b"2" * 100


def test_pull_downloads_only_the_files_that_differ(tmp_path, monkeypatch):
    store, work, copy = location(tmp_path / "bucket"), tmp_path / "work", tmp_path / "copy"
    _folder(work / "data", {"same.npy": b"s" * 50, "changed.npy": b"old"})
    push(work, store, "data")
    pull(store, "data", copy)
    _folder(work / "data", {"changed.npy": b"new"})
    push(work, store, "data")
    downloaded = []
    real = pafs.copy_files
    monkeypatch.setattr(pafs, "copy_files", lambda src, dst, **kw: (downloaded.append(src), real(src, dst, **kw)))
    pull(store, "data", copy)
    assert [src.rsplit("/", 1)[-1] for src in downloaded] == ["changed.npy"]
    assert (copy / "data" / "changed.npy").read_bytes() == b"new"


def test_an_output_without_its_manifest_is_not_on_the_store(tmp_path):
    """The manifest is the last object a push writes: files uploaded without it (a push that died)
    are not taken for an output."""
    (tmp_path / "bucket" / "models").mkdir(parents=True)
    (tmp_path / "bucket" / "models" / "half.pt").write_bytes(b"x")
    with pytest.raises(StoreError, match="not on the store"):
        pull(location(tmp_path / "bucket"), "models", tmp_path / "copy")


def _own_scratch(tmp_path, monkeypatch) -> None:
    """This test's own folder for the node's working copy (pipeline.store.scratch_root)."""
    (tmp_path / "scratch").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    monkeypatch.setattr("tempfile.tempdir", None)


def _tiny_project(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    return project


def test_a_stage_on_the_store_leaves_small_files_and_folder_manifests_for_dvc(tmp_path, monkeypatch):
    _own_scratch(tmp_path, monkeypatch)
    project, store = _tiny_project(tmp_path), location(tmp_path / "bucket")
    params = Params()
    with stage_on_store("train", params, project, store) as root:
        _folder(root / "models", {"segmenter.pt": b"w" * 10})
        _folder(root / "results", {"train_history.csv": b"epoch\n1\n"})
    assert (project / "results" / "train_history.csv").read_bytes() == b"epoch\n1\n"
    assert [p.name for p in (project / "models").iterdir()] == [LOCAL_MANIFEST]
    tracked = json.loads((project / "models" / LOCAL_MANIFEST).read_text())
    assert tracked["files"]["segmenter.pt"]["size"] == 10
    assert (tmp_path / "bucket" / MANIFESTS / "models.json").is_file()


def test_a_stage_that_fails_pushes_nothing(tmp_path, monkeypatch):
    _own_scratch(tmp_path, monkeypatch)
    project, store = _tiny_project(tmp_path), location(tmp_path / "bucket")
    with pytest.raises(RuntimeError), stage_on_store("train", Params(), project, store) as root:
        _folder(root / "models", {"segmenter.pt": b"half"})
        raise RuntimeError("the training failed")
    assert not (tmp_path / "bucket" / "models").exists() and not (project / "models").exists()


def test_a_store_version_other_than_the_one_dvc_checked_out_is_refused(tmp_path, monkeypatch):
    _own_scratch(tmp_path, monkeypatch)
    project, store = _tiny_project(tmp_path), location(tmp_path / "bucket")
    with stage_on_store("train", Params(), project, store) as root:
        _folder(root / "models", {"segmenter.pt": b"v1"})
    other = tmp_path / "other"
    _folder(other / "models", {"segmenter.pt": b"v2"})
    push(other, store, "models")  # another checkout trained since
    with pytest.raises(StoreError, match="another version"), stage_on_store("evaluate", Params(), project, store):
        pass


def test_a_users_own_data_folder_is_pushed_before_the_stage_reads_it(tmp_path, monkeypatch):
    _own_scratch(tmp_path, monkeypatch)
    project, store = _tiny_project(tmp_path), location(tmp_path / "bucket")
    _folder(project / "mine", {"images/a.png": b"png", "masks/a.png": b"mask"})
    params = Params.model_validate({"data": {"source": "mine"}})
    with stage_on_store("prepare", params, project, store) as root:
        assert (root / "mine" / "images" / "a.png").read_bytes() == b"png"
    assert (tmp_path / "bucket" / "mine" / "masks" / "a.png").read_bytes() == b"mask"


def test_a_project_on_object_storage_refuses_the_local_mlflow_store(tmp_path, monkeypatch, capsys):
    """Workers on several machines log runs: SQLite in one node's folder cannot take them. Refused
    before the stage reads the store or writes anything."""
    from pipeline.cli import main

    monkeypatch.setenv("GANSEG_STORE", "s3://bucket/project")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "MLflow's local store sqlite:///" in error and "set MLFLOW_TRACKING_URI to an MLflow server" in error
    assert list(tmp_path.iterdir()) == []
