"""The tune stage's search: ASHA's rungs after the adversarial warm-up, Optuna's seeded TPE, the default space."""

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from ganseg.config import Params, load_params
from ganseg.errors import ParamsError
from pipeline.ray.search import (
    check_rungs,
    first_points,
    first_rung,
    longest_warmup,
    make_scheduler,
    make_searcher,
    pick_best,
    to_domain,
)
from tests.conftest import ROOT


def tuned(warmup: int, grace: int, epochs: int, **more) -> Params:
    return Params().with_overrides(
        {"train.adv_warmup_epochs": warmup, "tune.grace_period": grace, "tune.epochs": epochs} | more
    )


def first_stop(params: Params) -> int | None:
    """The epoch at which the real ASHA scheduler first stops a trial that is always behind another."""
    scheduler = make_scheduler(params)
    scheduler.set_search_properties(params.tune.metric, params.tune.mode)
    ahead, behind = SimpleNamespace(trial_id="ahead"), SimpleNamespace(trial_id="behind")
    for trial in (ahead, behind):
        scheduler.on_trial_add(None, trial)
    for epoch in range(1, params.tune.epochs + 1):
        scheduler.on_trial_result(None, ahead, {"epoch": epoch, "val_miou": 0.9})
        if scheduler.on_trial_result(None, behind, {"epoch": epoch, "val_miou": 0.1}) == TrialScheduler.STOP:
            return epoch
    return None


@pytest.mark.parametrize("warmup, grace, epochs, rung", [(2, 2, 6, 4), (2, 1, 6, 3), (0, 1, 6, 1), (3, 2, 6, 5)])
def test_asha_first_cuts_a_trial_grace_period_epochs_after_the_warmup(warmup, grace, epochs, rung):
    params = tuned(warmup, grace, epochs)
    assert first_rung(params) == rung
    assert first_stop(params) == rung > warmup


def test_the_defaults_compare_trials_after_the_warmup_and_before_the_last_epoch():
    params = load_params(ROOT / "params.yaml")
    assert params.train.adv_warmup_epochs < first_rung(params) < params.tune.epochs
    check_rungs(params)
    assert first_stop(params) == first_rung(params)


def test_a_warmup_in_the_search_space_counts_with_its_largest_value():
    choice = {"train.adv_warmup_epochs": {"type": "choice", "values": [0, 3, 1]}}
    randint = {"train.adv_warmup_epochs": {"type": "randint", "low": 0, "high": 4}}  # 0..3
    for space in (choice, randint):
        params = tuned(1, 2, 6, **{"tune.search_space": space})
        assert longest_warmup(params) == 3 and first_rung(params) == 5


def test_a_first_rung_past_the_last_epoch_is_refused():
    message = (
        "tune.grace_period counts from the end of the adversarial warm-up: train.adv_warmup_epochs 2"
        " + tune.grace_period 2 puts ASHA's first comparison at epoch 4, after the last of tune.epochs 3;"
        " raise tune.epochs or lower tune.grace_period"
    )
    with pytest.raises(ParamsError) as err:
        check_rungs(tuned(2, 2, 3))
    assert str(err.value) == message
    searched = {"tune.search_space": {"train.adv_warmup_epochs": {"type": "choice", "values": [1, 4]}}}
    with pytest.raises(ParamsError, match=r"adv_warmup_epochs 4 \(the largest in tune.search_space\)"):
        check_rungs(tuned(1, 2, 5, **searched))


def test_a_first_rung_at_the_last_epoch_is_allowed_though_it_cuts_nothing_short():
    params = tuned(0, 1, 1)  # the tiny settings of the end-to-end tests
    check_rungs(params)
    assert first_stop(params) == params.tune.epochs  # a trial that ends there anyway


def test_the_default_space_holds_the_supervised_baseline():
    for params in (Params(), load_params(ROOT / "params.yaml")):
        assert 0 in params.tune.search_space["train.lambda_adv"].values


EVERY_TYPE = {
    "train.lambda_adv": {"type": "choice", "values": [0.0, 0.01, 0.1]},
    "train.lr_g": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "train.ema_decay": {"type": "uniform", "low": 0.9, "high": 0.99},
    "model.base_channels": {"type": "randint", "low": 8, "high": 12},
}


def suggestions(params: Params, count: int) -> list[dict]:
    searcher = make_searcher(params)
    space = {key: to_domain(dim) for key, dim in params.tune.search_space.items()}
    assert searcher.set_search_properties(params.tune.metric, params.tune.mode, space)
    found = []
    for i in range(count):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {params.tune.metric: config["train.lr_g"] * 100})
        found.append(config)
    return found


def test_optuna_searches_every_kind_of_dimension_and_is_seeded():
    params = Params().with_overrides({"tune.search_space": EVERY_TYPE, "tune.num_samples": 6})
    first = suggestions(params, 6)
    assert first == suggestions(params, 6)
    assert first != suggestions(params.with_overrides({"seed": 7}), 6)
    for config in first:
        assert set(config) == set(EVERY_TYPE)
        assert config["train.lambda_adv"] in (0.0, 0.01, 0.1) and 1e-4 <= config["train.lr_g"] <= 1e-2
        assert 0.9 <= config["train.ema_decay"] <= 0.99 and config["model.base_channels"] in range(8, 12)
        params.with_overrides(config)  # each suggestion is a valid trial


def test_every_adversarial_weight_is_tried_first_under_the_same_settings():
    params = Params().with_overrides({"tune.search_space": EVERY_TYPE, "tune.num_samples": 5,
                                      "train.lr_g": 0.5, "model.base_channels": 9})
    first = suggestions(params, 5)
    same = {"train.lr_g": 1e-2, "train.ema_decay": params.train.ema_decay, "model.base_channels": 9}  # lr_g: in range
    assert first[:3] == [same | {"train.lambda_adv": weight} for weight in (0.0, 0.01, 0.1)]
    assert first[3]["train.lr_g"] != 1e-2  # then TPE's own


def test_a_search_smaller_than_the_weights_tries_as_many_as_it_has_trials():
    params = Params().with_overrides({"tune.search_space": EVERY_TYPE, "tune.num_samples": 2})
    assert [point["train.lambda_adv"] for point in first_points(params)] == [0.0, 0.01]
    assert first_points(params.with_overrides({"tune.search_space": {"train.lr_g": EVERY_TYPE["train.lr_g"]}})) == []


def test_an_empty_search_space_has_no_searcher():
    assert make_searcher(Params().with_overrides({"tune.search_space": {}})) is None


def trials(*scored: tuple[float, float]) -> list[tuple[dict, float]]:
    """(λ_adv, validation score) per trial."""
    return [({"train.lr_g": 0.002, "train.lambda_adv": weight}, score) for weight, score in scored]


def test_a_trial_within_the_tie_margin_of_the_best_wins_when_its_lambda_adv_is_smaller():
    params = Params().with_overrides({"tune.tie_margin": 0.002})
    scored = trials((0.1, 0.8132), (0.0, 0.8126), (0.03, 0.8130), (0.01, 0.8050))
    assert pick_best(scored, params) == 1  # λ 0 trails by 0.0006: a tie, and the baseline trains fastest


def test_a_lead_beyond_the_margin_wins_whatever_its_lambda_adv():
    scored = trials((0.0, 0.80), (0.1, 0.81), (0.03, 0.805))
    assert pick_best(scored, Params().with_overrides({"tune.tie_margin": 0.002})) == 1
    assert pick_best(scored, Params().with_overrides({"tune.tie_margin": 0.0})) == 1
    assert pick_best(scored, Params().with_overrides({"tune.tie_margin": 0.02})) == 0


def test_ties_on_a_metric_to_minimise_are_those_just_above_the_lowest():
    params = Params().with_overrides({"tune.metric": "val_loss", "tune.mode": "min", "tune.tie_margin": 0.01})
    assert pick_best(trials((0.1, 0.290), (0.0, 0.298), (0.01, 0.320)), params) == 1
    assert pick_best(trials((0.1, 0.300), (0.0, 0.320)), params) == 0
