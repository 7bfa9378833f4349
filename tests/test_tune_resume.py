"""A tune stage killed mid-search resumes when run again: the same MLflow parent run, finished
trials kept as they were, the interrupted one continued in its own child run. (The first tests
need MLflow only, the last the whole stage.)"""

import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from pipeline.stages.tune import STATE_SAVE_PERIOD_S, open_parent, trial_run
from tests.e2e import TINY, clean_env, copy_project, mlflow_runs, prepare_project, run

pytestmark = pytest.mark.integration

TRIALS = 2
# A trial trains in the trial's own process, quickly: enough epochs (and no ASHA stop before the last)
# that the second trial is still running when the search is killed.
PARAMS = TINY | {"tune.num_samples": TRIALS, "tune.epochs": 10, "tune.grace_period": 10,
                 "tune.max_concurrent_trials": 1, "data.synthetic.num_images": 400}


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_only_an_unfinished_search_of_the_same_key_is_reopened_and_only_with_resume(client, tiny_params, tmp_path,
                                                                                   capsys):
    """Killed: reopened. FAILED: a new run, unless runtime.resume_failed asks (the same random draws
    from the last checkpoint would meet the same error)."""
    tags = {"ganseg.stage": "tune"}
    first = open_parent(client, tiny_params, tmp_path, tags, "key")
    client.set_terminated(first, "KILLED")
    assert open_parent(client, tiny_params, tmp_path, tags, "key") == first
    assert client.get_run(first).info.status == "RUNNING"
    client.set_terminated(first, "FAILED")
    second = open_parent(client, tiny_params, tmp_path, tags, "key")
    assert second != first and client.get_run(first).info.status == "FAILED"
    assert f"{first}, an earlier attempt with the same config, ended FAILED" in capsys.readouterr().out
    client.set_terminated(second, "FINISHED")
    asked = tiny_params.with_overrides({"runtime.resume_failed": True})
    assert open_parent(client, asked, tmp_path, tags, "key") == first
    assert open_parent(client, tiny_params, tmp_path, tags, "other key") != first
    fresh = open_parent(client, tiny_params.with_overrides({"runtime.resume": False}), tmp_path, tags, "key")
    assert fresh != first
    for finished in (first, fresh):
        client.set_terminated(finished, "FINISHED")
    assert open_parent(client, tiny_params, tmp_path, tags, "key") not in (first, fresh)


def test_a_trial_started_again_reopens_its_child_run(client, tiny_params, tmp_path):
    parent = open_parent(client, tiny_params, tmp_path, {"ganseg.stage": "tune"}, "key")
    context = {"parent_run_id": parent, "trial_tags": {"ganseg.stage": "tune-trial"}}
    child = trial_run(client, tiny_params, tmp_path, {}, "t1", context)
    client.set_terminated(child, "FAILED")
    assert trial_run(client, tiny_params, tmp_path, {}, "t1", context) == child
    assert client.get_run(child).info.status == "RUNNING"
    assert trial_run(client, tiny_params, tmp_path, {}, "t2", context) != child


@pytest.fixture
def ray_tmp():
    """A private Ray temp dir (short: it holds sockets), so this test's Ray processes can be found."""
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield folder
    subprocess.run(["pkill", "-9", "-f", folder], check=False)


def trial_runs(repo) -> list:
    """The search's trial runs, the first started first."""
    return sorted(mlflow_runs(repo, "tune-trial"), key=lambda r: r.info.start_time)


def history(repo, run_id: str) -> list[tuple]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, "val_miou")]


def tune_until_the_second_trial_started(repo, env, ray_tmp: str, timeout_s: float = 900) -> list[str]:
    """`ganseg tune`, killed (its process group and Ray's processes) once the first trial has
    finished and the second has its MLflow run; the output it printed."""
    process = subprocess.Popen(["ganseg", "tune"], cwd=repo, env=env, start_new_session=True, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, first_done = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if line.startswith("trial 1/"):
                first_done.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while not (first_done.is_set() and len(trial_runs(repo)) == 2):
            assert process.poll() is None, f"tune ended before it could be killed:\n{''.join(lines)}"
            assert time.monotonic() < deadline, f"no second trial in time:\n{''.join(lines)}"
            time.sleep(1)
        time.sleep(float(STATE_SAVE_PERIOD_S) + 1)  # Tune has saved the first trial's end by now
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False)
    return lines


def test_a_killed_search_resumes_in_its_parent_run_without_rerunning_finished_trials(tmp_path, ray_tmp):
    repo = copy_project(tmp_path / "repo", PARAMS)
    env = clean_env(RAY_TMPDIR=ray_tmp)
    prepare_project(repo, env)
    first_output = tune_until_the_second_trial_started(repo, env, ray_tmp)
    (interrupted,) = mlflow_runs(repo, "tune")
    assert interrupted.info.status == "RUNNING", "".join(first_output)
    first, second = trial_runs(repo)
    first_trial, first_history = first.data.tags["ganseg.trial_id"], history(repo, first.info.run_id)
    assert first_history, "the first trial logged its epochs"

    result = run(["ganseg", "tune"], repo, env)
    output = result.stdout + result.stderr
    assert f"resuming tune run {interrupted.info.run_id}" in output
    assert "restoring the Ray Tune search" in output
    # the finished trial is not run again: the count of finished trials goes on from 1
    assert "trial 1/" not in output and f"trial {TRIALS}/{TRIALS}  " in output, output

    (parent,) = mlflow_runs(repo, "tune")
    assert parent.info.run_id == interrupted.info.run_id and parent.info.status == "FINISHED"
    trials = trial_runs(repo)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert [r.info.status for r in trials] == ["FINISHED"] * TRIALS
    assert len({r.data.tags["ganseg.trial_id"] for r in trials}) == TRIALS  # one run per trial
    assert {first.info.run_id, second.info.run_id} <= {r.info.run_id for r in trials}  # the second continued
    (kept,) = [r for r in trials if r.data.tags["ganseg.trial_id"] == first_trial]
    assert kept.info.run_id == first.info.run_id and history(repo, kept.info.run_id) == first_history
    best = json.loads((repo / "results/tune/best_config.json").read_text())
    assert best["mlflow_parent_run_id"] == parent.info.run_id
