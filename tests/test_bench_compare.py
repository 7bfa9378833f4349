"""`ganseg bench quality`: paired differences with their t interval, and the configurations to compare."""

import math

import pytest
from scipy import stats

from ganseg.bench.contenders import (
    BASELINE,
    check_contenders,
    contenders,
    parse_contender,
)
from ganseg.bench.paired import paired_comparisons, paired_difference
from ganseg.config import Params
from ganseg.errors import ParamsError
from pipeline.cli import main
from tests.conftest import ROOT

T_975_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (tables)


def test_paired_difference_by_hand():
    result = paired_difference([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3: mean 2, sd 1
    half = T_975_2 * 1 / math.sqrt(3)
    assert result["differences"] == [1.0, 2.0, 3.0] and result["n"] == 3 and result["mean"] == pytest.approx(2)
    assert (result["low"], result["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert result["verdict"] == "tie"  # -0.48 .. 4.48 holds 0


def test_paired_difference_matches_scipys_paired_t_test():
    ours = [0.801, 0.799, 0.805, 0.803, 0.800]
    baseline = [0.795, 0.797, 0.798, 0.799, 0.796]
    result = paired_difference(ours, baseline)
    interval = stats.ttest_rel(ours, baseline).confidence_interval(0.95)
    assert (result["low"], result["high"]) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert result["verdict"] == "better" and paired_difference(baseline, ours)["verdict"] == "worse"


@pytest.mark.parametrize("values, reference, verdict", [
    ([0.5], [0.4], "n/a"),  # one seed: no interval
    ([0.5, 0.6], [0.4, 0.5], "better"),  # equal differences: the interval is the point 0.1
    ([0.4, 0.5], [0.4, 0.5], "tie"),
    ([], [], "n/a"),
])
def test_paired_difference_edge_cases(values, reference, verdict):
    result = paired_difference(values, reference)
    assert result["verdict"] == verdict
    if len(values) == 2:
        assert result["low"] == pytest.approx(result["high"]) == pytest.approx(result["mean"])


def test_paired_difference_needs_one_reference_per_value():
    with pytest.raises(ValueError, match="one reference each"):
        paired_difference([0.1, 0.2], [0.1])


def test_paired_comparisons_pair_by_seed_and_skip_missing_values():
    runs = [
        {"config": "base", "seed": 1, "miou": 0.5}, {"config": "base", "seed": 2, "miou": 0.6},
        {"config": "base", "seed": 3, "miou": 0.7},
        {"config": "gan", "seed": 3, "miou": 0.75}, {"config": "gan", "seed": 1, "miou": None},
        {"config": "gan", "seed": 2, "miou": 0.62},
    ]
    [row] = paired_comparisons(runs, {"gan": "base"}, {"mIoU": lambda run: run["miou"]})
    assert (row["config"], row["reference"], row["metric"], row["seeds"]) == ("gan", "base", "mIoU", [3, 2])
    assert row["differences"] == pytest.approx([0.05, 0.02]) and row["n"] == 2


def test_parse_contender_reads_values_like_set():
    assert parse_contender("lsgan=train.adv_loss=lsgan, train.lambda_adv=1e-2") == (
        "lsgan", {"train.adv_loss": "lsgan", "train.lambda_adv": 0.01})
    # commas inside a value stay in it: a new override starts only at ', key='
    assert parse_contender("w=train.class_weights=[1, 2.5],train.ema_decay=0") == (
        "w", {"train.class_weights": [1, 2.5], "train.ema_decay": 0})
    assert parse_contender("as given=") == ("as given", {})


@pytest.mark.parametrize("text", ["lsgan", "=train.lambda_adv=0", "x=train.lambda_adv"])
def test_parse_contender_refuses_malformed_text(text):
    with pytest.raises(ParamsError, match="--contender"):
        parse_contender(text)


def test_default_rows_and_their_references():
    rows = contenders(0.25)
    assert [(r.name, r.reference) for r in rows] == [
        (BASELINE, None), ("GAN segmenter", BASELINE), ("supervised, 25% labels", BASELINE),
        ("semi-supervised, 25% labels", "supervised, 25% labels"),
    ]
    assert rows[0].overrides == {"train.lambda_adv": 0.0}
    assert rows[3].overrides == {"train.semi.label_fraction": 0.25}


def test_named_variants_replace_the_gan_rows():
    variants = [("lsgan", {"train.adv_loss": "lsgan"}), ("light", {"train.lambda_adv": 0.01})]
    assert [(r.name, r.reference) for r in contenders(None, variants)] == [
        (BASELINE, None), ("lsgan", BASELINE), ("light", BASELINE),
    ]
    rows = contenders(0.5, variants)
    assert [(r.name, r.reference) for r in rows[3:]] == [
        ("supervised, 50% labels", BASELINE), ("lsgan, 50% labels", "supervised, 50% labels"),
        ("light, 50% labels", "supervised, 50% labels"),
    ]
    assert rows[-1].overrides == {"train.lambda_adv": 0.01, "train.semi.label_fraction": 0.5}


def test_variant_names_must_be_new():
    with pytest.raises(ParamsError, match="names must differ.*'supervised baseline'"):
        contenders(None, [(BASELINE, {})])
    with pytest.raises(ParamsError, match=r"\['a'\]"):
        contenders(None, [("a", {}), ("a", {"train.lambda_adv": 0.1})])


def test_invalid_overrides_are_refused_naming_the_contender():
    rows = contenders(None, [("typo", {"train.lamda_adv": 0.1})])
    with pytest.raises(ParamsError, match="--contender typo is not valid:\n  train.lamda_adv: unknown key"):
        check_contenders(Params(), rows)


def test_cli_refuses_bad_contenders_before_any_work(capsys):
    assert main(["bench", "quality", "--data", "synthetic", "--contender", "no overrides here"]) == 2
    assert "--contender expects NAME=key=value" in capsys.readouterr().err
    code = main(["bench", "quality", "--data", "synthetic", "--params", str(ROOT / "params.yaml"),
                 "--contender", "typo=train.lamda_adv=0.1"])
    captured = capsys.readouterr()
    assert code == 2 and "--contender typo is not valid" in captured.err and "prepared" not in captured.out


def test_a_single_run_shows_its_score_without_a_spread():
    from ganseg.bench.tables import _mean_std

    assert _mean_std({"mean": 0.78432, "std": 0.0, "n": 1}) == "0.784"
    assert _mean_std({"mean": 0.78432, "std": 0.0042, "n": 3}) == "0.784 ± 0.004"
    assert _mean_std({"mean": None, "std": None, "n": 0}) == "n/a"
