import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from mlflow.tracking import MlflowClient

from pipeline.cli import main
from pipeline.tracking import runs
from pipeline.tracking.runs import (
    TrackingServerError,
    flatten,
    require_reachable,
    safe_key,
)
from tests.conftest import ROOT


def test_flatten_nested_config_into_valid_param_names():
    flat = flatten({"data": {"palette": {"255,0,0": 1}, "split": {"train": 0.7}, "empty": {}}, "seed": 3})
    assert flat == {"data.palette.255_0_0": "1", "data.split.train": "0.7", "data.empty": "{}", "seed": "3"}


@pytest.mark.parametrize("raw, safe", [("val_dice_cell wall", "val_dice_cell wall"), ("a+b/c", "a_b_c"), ("x,y", "x_y")])
def test_safe_key(raw, safe):
    assert safe_key(raw) == safe


@pytest.fixture(scope="module")
def sqlite_client(tmp_path_factory):
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


def test_params_metrics_and_tags_with_awkward_names_are_logged(sqlite_client, tmp_path):
    params = {"data": {"palette": {"255,0,0": 1, "0,0,0": 0}}, "model": {"depth": 3}}
    run_id = runs.create_run(sqlite_client, "awkward", tmp_path, "r", tags={"a+b": "1"}, params=params)
    runs.log_metrics(sqlite_client, run_id, {"val_dice_cell+wall": 0.5, "nan": float("nan")}, step=1)
    data = sqlite_client.get_run(run_id).data
    assert data.params["data.palette.255_0_0"] == "1" and data.params["model.depth"] == "3"
    assert data.metrics == {"val_dice_cell_wall": 0.5}
    assert data.tags["a_b"] == "1"


def test_more_params_than_one_request_takes_are_all_logged(sqlite_client, tmp_path):
    params = {"search": {f"key_{i:03d}": i for i in range(250)}}  # MLflow takes 100 params a request
    run_id = runs.create_run(sqlite_client, "many", tmp_path, "r", tags={}, params=params)
    logged = sqlite_client.get_run(run_id).data.params
    assert len(logged) == 250 and logged["search.key_249"] == "249"


def test_local_store_refuses_an_experiment_whose_artifacts_sit_behind_a_server(sqlite_client, tmp_path):
    sqlite_client.create_experiment("served", artifact_location="mlflow-artifacts:/7")
    with pytest.raises(TrackingServerError, match="experiment 'served' keeps its artifacts behind an MLflow server"):
        runs.experiment_id(sqlite_client, "served", tmp_path)
    runs.require_artifact_access(MlflowClient("http://127.0.0.1:5000"), "mlflow-artifacts:/7", "through a server")
    runs.require_artifact_access(sqlite_client, (tmp_path / "artifacts").as_uri(), "a local folder")


def test_experiment_is_tagged_for_model_training_when_created_and_when_reused(sqlite_client, tmp_path):
    created = runs.experiment_id(sqlite_client, "fresh", tmp_path)
    assert sqlite_client.get_experiment(created).tags["mlflow.experimentKind"] == "custom_model_development"
    older = sqlite_client.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    assert runs.experiment_id(sqlite_client, "made-before", tmp_path) == older
    assert sqlite_client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_run_with_prepared_data_has_it_as_its_input(sqlite_client, tmp_path):
    md5 = "0123456789abcdef0123456789abcdef.dir"
    tags = {"ganseg.dataset": "synthetic", "ganseg.data_md5": md5, "ganseg.data_path": "data/prepared"}
    run_id = runs.create_run(sqlite_client, "inputs", tmp_path, "r", tags=tags)
    (logged,) = sqlite_client.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("synthetic@01234567", md5)
    assert str(tmp_path / "data" / "prepared") in logged.dataset.source
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "training"}
    no_data = runs.create_run(sqlite_client, "inputs", tmp_path, "r2", tags={"ganseg.dataset": "synthetic"})
    assert sqlite_client.get_run(no_data).inputs.dataset_inputs == []


def test_unreachable_server_is_named_in_the_error(refused_port):
    uri = f"http://127.0.0.1:{refused_port}"
    with pytest.raises(TrackingServerError, match=f"cannot reach the MLflow tracking server {uri}"):
        require_reachable(uri, timeout_s=2)


class _Answer(BaseHTTPRequestHandler):
    status = 200
    body = b'{"experiments": []}'
    paths: list[str]  # what was asked, per server

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(request):
    handler = type("Handler", (_Answer,), {"status": request.param, "paths": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler.paths
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("http_server", [404], indirect=True)
def test_a_server_that_is_not_mlflow_is_reported(http_server):
    with pytest.raises(TrackingServerError, match="HTTP 404.*is it an MLflow server"):
        require_reachable(http_server[0])


@pytest.mark.parametrize("http_server", [200, 401], indirect=True)
def test_an_answering_server_passes_after_one_probe_of_mlflows_api(http_server):
    uri, asked = http_server
    require_reachable(uri)  # 401: a server with authentication, whose credentials MLflow's client brings
    assert asked == ["/api/2.0/mlflow/experiments/search?max_results=1"]


def test_local_uris_are_not_probed(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a local store was probed over the network")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    require_reachable("sqlite:///nowhere/mlflow.db")
    require_reachable("./mlruns")
    with pytest.raises(AssertionError, match="probed"):  # the guard itself works
        require_reachable("http://127.0.0.1:1")


@pytest.mark.parametrize("stage", ["tune", "train", "evaluate"])
def test_stage_fails_at_once_when_the_server_is_down(stage, tmp_path, monkeypatch, capsys, refused_port):
    import ray

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    uri = f"http://127.0.0.1:{refused_port}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main([stage]) == 2
    err = capsys.readouterr().err
    assert f"ganseg {stage}: error: cannot reach the MLflow tracking server {uri}" in err
    assert "mlflow server --host 127.0.0.1" in err
    assert not ray.is_initialized()  # failed before any training was started
    assert not (tmp_path / "mlflow.db").exists()


def test_server_command_matches_the_docs():
    assert runs.SERVER_COMMAND in (ROOT / "docs" / "mlflow.md").read_text()


def test_run_names_tell_runs_apart():
    """By stage and start time, to the second (sortable)."""
    from datetime import datetime

    name = runs.run_name("train")
    started = datetime.strptime(name.removeprefix("train-"), "%Y%m%d-%H%M%S")
    assert abs((datetime.now() - started).total_seconds()) < 5
    assert runs.run_name("tune").startswith("tune-") and runs.run_name("tune") != name
