"""tests/cpu_census.py, the tool behind docs/tests.md's figures of the suite's CPU: how it names a
process, and that it counts the CPU of a command's children on a real run."""

import json
import subprocess
import sys
from types import SimpleNamespace

import psutil
import pytest

from tests.cpu_census import IDLE, UNNAMED, Census, Seen, kind, main


@pytest.mark.parametrize("cmdline, expected", [
    (["ray::RayTrainWorker.run_train_fn"], "ray::RayTrainWorker"),
    (["ray-dashboard-NodeHead-0 python -B"], "ray-dashboard-NodeHead-0"),
    (["/venv/bin/python", "/venv/bin/ganseg", "train", "--set", "train.epochs=2"], "ganseg train"),
    (["/venv/bin/python", "-u", "-m", "pipeline.cli", "tune"], "pipeline.cli tune"),
    (["/venv/bin/python", "-m", "pipeline.ray.data_bench", '{"params": {}}'], "pipeline.ray.data_bench"),
    (["/venv/bin/python", "-u", "/venv/ray/dashboard/dashboard.py", "--host=127.0.0.1"], "dashboard.py"),
    (["python3", "-W", "ignore::DeprecationWarning", "-c", "print(1)"], "python3 -c"),
    (["/venv/ray/core/src/ray/gcs/gcs_server", "--log_dir=/tmp/ray"], "gcs_server"),
    ([], UNNAMED),
])
def test_a_process_is_named_by_ray_or_by_its_script_and_subcommand(cmdline, expected):
    assert kind(cmdline) == expected


def test_a_worker_back_in_rays_pool_or_ended_keeps_the_name_of_its_work():
    worker = Seen("default_worker.py")
    worker.update(IDLE, 0.7)
    assert worker.name == IDLE  # a worker that never ran anything is counted as idle
    worker.update("ray::TrainController", 3.0)
    worker.update(IDLE, 3.1)
    worker.update(UNNAMED, 3.2)
    assert (worker.name, worker.cpu_s) == ("ray::TrainController", 3.2)


class FakeProcess:
    """What the census reads of a process: pid, start time, parent, CPU and command line."""

    def __init__(self, pid: int, started: float, parent: int, name: str):
        self.pid, self.started, self.parent, self.name = pid, started, parent, name

    def create_time(self) -> float:
        return self.started

    def ppid(self) -> int:
        return self.parent

    def cpu_times(self):
        return SimpleNamespace(user=1.0, system=0.0)

    def cmdline(self) -> list[str]:
        return [self.name]


def test_a_process_that_took_the_pid_of_an_ended_one_of_ours_is_not_ours(monkeypatch):
    root, child = FakeProcess(10, 1.0, 1, "root"), FakeProcess(100, 2.0, 10, "child")
    census = Census(root=10)
    monkeypatch.setattr(psutil, "process_iter", lambda: [root, child])
    census.read()
    # The child ended; another program's process took its pid and started one of its own.
    reused, its_child = FakeProcess(100, 5.0, 1, "reused"), FakeProcess(200, 6.0, 100, "its-child")
    second_child = FakeProcess(300, 7.0, 10, "second-child")
    monkeypatch.setattr(psutil, "process_iter", lambda: [root, reused, its_child, second_child])
    census.read()
    assert sorted(seen.name for seen in census.seen.values()) == ["child", "root", "second-child"]


def test_the_cpu_of_a_commands_child_is_counted_and_not_that_of_a_process_beside_it(tmp_path, capsys):
    burn = "import time\nwhile time.process_time() < 1.0: pass"
    parent = f"import subprocess, sys\nsys.exit(subprocess.run([sys.executable, '-c', {burn!r}]).returncode + 3)"
    beside = subprocess.Popen([sys.executable, "-c", burn])  # started by this process, not by the command
    try:
        returncode = main(["--every", "0.1", "--json", str(tmp_path / "figures.json"), "--", sys.executable, "-c",
                           parent])
    finally:
        beside.wait()
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert returncode == 3 == figures["returncode"]
    python = figures["kinds"][f"{kind([sys.executable])} -c"]
    assert figures["processes"] == python["processes"] == 2  # the command and its child
    assert python["cpu_s"] >= 0.5  # the child burned 1.0
    assert figures["busy_cpu_s"] >= python["cpu_s"] * 0.9
    assert "| 2 |" in capsys.readouterr().out
