"""A tune trial that fails: the search goes on, says which trial failed and where its error is,
picks among the trials that finished, and its MLflow child run ends FAILED."""

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.stages.tune import TRIAL_ID_TAG
from tests.conftest import prepare_dataset

pytestmark = pytest.mark.integration

DIVERGES = 1e39  # λ_adv beyond float32: the first adversarial loss is infinite, the trial fails at step 1


def test_a_failed_trial_is_named_and_the_best_comes_from_the_others(two_cpu_ray, tmp_path, tiny_params, monkeypatch,
                                                                   capsys):
    from pipeline.stages import tune

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tiny_params.with_overrides({
        "tune.search_space": {"train.lambda_adv": {"type": "choice", "values": [0.0, DIVERGES]}},
        "tune.num_samples": 2, "tune.epochs": 1, "tune.grace_period": 1,
        "runtime.max_failures": 0,  # the same infinite loss would come back on every retry
        "data.output_dir": str(tmp_path / "prep"),
    })
    prepare_dataset(params.data, params.seed, tmp_path / "prep", progress=False)
    best = tune.run(params, tmp_path, tmp_path / "best.json")
    assert best["overrides"]["train.lambda_adv"] == 0.0
    assert (tmp_path / "best.json").is_file()
    (where,) = re.findall(r"^trial [12]/2 failed: see (.+)$", capsys.readouterr().err, re.MULTILINE)
    assert "NonFiniteLossError" in Path(where).read_text()  # the trial's error file, with its traceback

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs(["1"], "tags.`ganseg.stage` = 'tune'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs(["1"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    status = {float(run.data.params["train.lambda_adv"]): run.info.status for run in children}
    assert status == {0.0: "FINISHED", DIVERGES: "FAILED"}
    assert all(run.data.tags.get(TRIAL_ID_TAG) for run in children)
