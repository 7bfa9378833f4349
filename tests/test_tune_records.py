from types import SimpleNamespace

import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline.ray.search import search_space_record
from pipeline.stages.tune import backfill_epochs, outcome_tags
from pipeline.tracking import runs


def test_epochs_tune_received_but_the_run_lacks_are_logged_once(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e", (tmp_path / "a").as_uri())).info.run_id
    runs.log_metrics(client, run_id, {"epoch": 1, "val_miou": 0.3}, step=1)  # the worker logged epoch 1 only
    reports = pd.DataFrame([
        {"epoch": 1, "val_miou": 0.3, "timestamp": 1.7e9, "trial_id": "t1", "done": False, "config/train.lr_g": 0.1},
        {"epoch": 2, "val_miou": 0.4, "timestamp": 1.7e9, "trial_id": "t1", "done": True, "config/train.lr_g": 0.1},
    ])
    result = SimpleNamespace(metrics_dataframe=reports)  # the part of Tune's Result that is read
    backfill_epochs(client, run_id, result)
    backfill_epochs(client, run_id, result)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_miou")] == [(1, 0.3), (2, 0.4)]
    assert set(client.get_run(run_id).data.metrics) == {"epoch", "val_miou"}


def test_search_space_record_lists_every_dimension(tiny_params):
    params = tiny_params.with_overrides(
        {"tune.search_space": {"train.lr_g": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
         "train.adv_warmup_epochs": 3, "tune.grace_period": 2, "tune.epochs": 8, "tune.num_samples": 4}
    )
    record = search_space_record(params)
    assert record["search_space"] == {"train.lr_g": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}
    assert record["metric"] == params.tune.metric
    assert record["searcher"] == {"type": "optuna TPE", "seed": params.seed, "n_startup_trials": 2, "first_trials": []}
    # ASHA's own grace period counts from the end of the 3 warm-up epochs: 3 + 2; max_t one past 8 epochs
    assert record["scheduler"] == {"type": "ASHA", "time_attr": "epoch", "grace_period": 5, "max_t": 9,
                                   "reduction_factor": 4}


def test_only_a_trial_asha_cut_short_is_tagged_stopped_early():
    assert outcome_tags(2, epochs=6) == {"ganseg.epochs_run": 2, "ganseg.stopped_early": "true"}
    assert outcome_tags(6, epochs=6) == {"ganseg.epochs_run": 6}
