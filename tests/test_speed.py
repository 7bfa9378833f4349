"""The CPU speed probe behind the train stage's warnings about bf16 and channels_last."""

import math

import pytest

import ganseg.speed
from ganseg.config import Params, TrainConfig
from ganseg.speed import probe_slowdowns, slower_options
from pipeline.training import warn_about_slower_options


def train_config(**settings) -> TrainConfig:
    return Params.model_validate({"train": settings}).train


def test_nothing_is_probed_when_no_option_is_asked_for(monkeypatch):
    monkeypatch.setattr(ganseg.speed, "seconds_per_step", lambda **_: pytest.fail("probed"))
    assert probe_slowdowns(train_config()) == {}
    assert slower_options(train_config(precision="bf16", channels_last=True), use_gpu=True) == []


def test_probe_measures_each_asked_option_against_fp32():
    slowdowns = probe_slowdowns(train_config(precision="bf16", channels_last=True))
    assert set(slowdowns) == {"bf16", "channels_last"}
    assert all(math.isfinite(value) and value > 0 for value in slowdowns.values())


@pytest.mark.parametrize("slowdown, warned", [(9.8, True), (1.05, False), (0.7, False)])
def test_warning_names_the_slowdown_and_the_fix(monkeypatch, slowdown, warned):
    monkeypatch.setattr(ganseg.speed, "probe_slowdowns", lambda cfg: {"bf16": slowdown, "channels_last": slowdown})
    warnings = slower_options(train_config(precision="bf16", channels_last=True), use_gpu=False)
    assert len(warnings) == (2 if warned else 0)
    if warned:
        bf16, channels_last = warnings
        assert f"{slowdown:.1f}x slower" in bf16 and "use train.precision: fp32" in bf16
        assert "set train.channels_last: false" in channels_last


def test_train_stage_prints_the_warning(monkeypatch, capsys):
    monkeypatch.setattr(ganseg.speed, "probe_slowdowns", lambda cfg: {"bf16": 10.0})
    warn_about_slower_options(train_config(precision="bf16"), use_gpu=False)
    assert capsys.readouterr().out.startswith("warning: train.precision bf16 runs 10.0x slower than fp32")
