"""Where inference runs: the GPU when there is one, the CPU when asked (`--cpu`, GANSEG_CPU=1)."""

import os

import pytest
import torch

from ganseg.devices import FORCE_CPU, cpu_forced, inference_device
from pipeline.cli import main


@pytest.mark.parametrize("value, forced", [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)])
def test_ganseg_cpu_forces_the_cpu_for_these_values(monkeypatch, value, forced):
    monkeypatch.setenv(FORCE_CPU, value)
    assert cpu_forced() is forced


def test_inference_takes_the_gpu_unless_the_cpu_is_forced(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(FORCE_CPU, raising=False)
    assert inference_device().type == "cuda"
    monkeypatch.setenv(FORCE_CPU, "1")
    assert inference_device().type == "cpu"


def test_inference_stays_on_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(FORCE_CPU, raising=False)
    assert inference_device().type == "cpu"


@pytest.mark.parametrize("command", [
    ["predict", "--model", "none", "--input", "none", "--output", "out"],
    ["evaluate"],
    ["generate", "--model", "none", "--masks", "none", "--output", "out"],
], ids=lambda command: command[0])
def test_the_cpu_flag_sets_ganseg_cpu_for_the_command_and_its_ray_workers(monkeypatch, tmp_path, command):
    monkeypatch.delenv(FORCE_CPU, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--cpu"]) == 2  # nothing to work on here
    assert os.environ.get(FORCE_CPU) == "1"
