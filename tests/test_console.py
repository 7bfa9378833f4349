"""The console lines of a stage, and where Ray's streamed output goes."""

import json

import pytest

from pipeline.console import EPOCH_MARK, MARK, EpochProgress, RayOutput, duration, epoch_line, is_warning_or_error
from pipeline.stages.tune import trial_line


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (45, "45s"), (80, "1m20s"), (3725, "1h02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_epoch_line_has_losses_miou_throughput_and_time_left():
    metrics = {"epoch": 3, "loss_g": 0.4123, "loss_d": 1.234, "val_miou": 0.81234, "images_per_s": 38.4, "lr_g": 0.1}
    assert epoch_line(metrics, 20, 80) == "epoch 3/20  loss_g 0.412  loss_d 1.23  val mIoU 0.812  38 img/s  ETA 1m20s"


def test_epoch_line_during_warm_up_and_at_the_end():
    # No discriminator loss before the adversarial term starts; nothing left after the last epoch.
    metrics = {"epoch": 20, "loss_g": 0.4, "val_miou": 0.8, "images_per_s": 40.0}
    assert epoch_line(metrics, 20, 0.0) == "epoch 20/20  loss_g 0.4  val mIoU 0.800  40 img/s"


def test_trial_line_names_settings_epochs_and_early_stop():
    result = {"epoch": 2, "loss_g": 0.5, "loss_d": 1.9, "val_miou": 0.7, "images_per_s": 60.2, "time_total_s": 70}
    line = trial_line(1, 4, 6, {"train.lr_g": 0.0029711, "train.lambda_adv": 0.03}, result, 130)
    assert line == ("trial 1/4  lr_g 0.00297  lambda_adv 0.03  2/6 epochs (stopped early)"
                    "  loss_g 0.5  loss_d 1.9  val mIoU 0.700  60 img/s  1m10s  ETA 2m10s")


@pytest.mark.parametrize("line, shown", [
    ("2026-01-01 12:00:00,000\tWARNING tune.py:819 -- You have passed ...", True),
    ("WARNING: 8 PYTHON worker processes have been started on node ...", True),
    ("ERROR worker.py:99 -- something broke", True),
    ("/x/torch/nn/modules/module.py:10: UserWarning: a deprecated call", True),
    ("Warning: The following resource request cannot be scheduled right now", True),
    ("Reporting training result 1: TrainingReport(checkpoint=None, metrics={'epoch': 1}) from rank 1", False),
    ("ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready.", False),
    ("Attempting to start training worker group of size 2", False),
])
def test_which_ray_lines_reach_the_console(line, shown):
    assert is_warning_or_error(line) is shown


def test_streamed_lines_all_go_to_the_file_and_only_ours_and_warnings_to_the_console(tmp_path, capsys):
    output = RayOutput(tmp_path / "logs" / "train.log")
    output.route({"pid": 11, "actor_name": "RayTrainWorker", "lines": [
        "Reporting training result 1: TrainingReport(checkpoint=None, metrics={}) from rank 0",
        f"{MARK}epoch 1/2  loss_g 1.0",
        "/x/y.py:3: UserWarning: careful",
    ]})
    output.route({"pid": "raylet", "lines": ["WARNING: 8 PYTHON worker processes have been started"]})
    shown = capsys.readouterr()
    assert shown.out == "epoch 1/2  loss_g 1.0\n"
    assert shown.err == ("(RayTrainWorker pid=11) /x/y.py:3: UserWarning: careful\n"
                         "(pid=raylet) WARNING: 8 PYTHON worker processes have been started\n")
    assert (tmp_path / "logs" / "train.log").read_text().splitlines() == [
        "(RayTrainWorker pid=11) Reporting training result 1: TrainingReport(checkpoint=None, metrics={}) from rank 0",
        f"(RayTrainWorker pid=11) {MARK}epoch 1/2  loss_g 1.0",
        "(RayTrainWorker pid=11) /x/y.py:3: UserWarning: careful",
        "(pid=raylet) WARNING: 8 PYTHON worker processes have been started",
    ]


def test_taking_over_replaces_rays_printing_and_keeps_only_the_autoscalers_events(tmp_path, capsys, monkeypatch):
    from ray._private import ray_constants
    from ray._private.ray_logging import (
        global_worker_stdstream_dispatcher as dispatcher,
    )

    monkeypatch.setattr(ray_constants, "AUTOSCALER_EVENTS", 0)  # Ray's filter then keeps no autoscaler line
    stale = []
    monkeypatch.setattr(dispatcher, "handlers", [("ganseg", stale.append)])  # an earlier runtime's, in this process
    printed = []
    dispatcher.add_handler("ray_print_logs", printed.append)  # as ray.init registers Ray's printing
    output = RayOutput(tmp_path / "train.log")
    try:
        output.take_over_worker_output()
        dispatcher.emit({"pid": 7, "task_name": "prepare", "lines": [f"{MARK}done", "plain"]})
        dispatcher.emit({"pid": "autoscaler", "lines": ["======== Autoscaler status ========"]})
    finally:
        dispatcher.remove_handler("ganseg"), dispatcher.remove_handler("ray_print_logs")
    assert printed == [] and stale == [] and capsys.readouterr().out == "done\n"
    assert (tmp_path / "train.log").read_text().splitlines() == [f"(prepare pid=7) {MARK}done", "(prepare pid=7) plain"]


def epoch_records(epochs: int) -> list[str]:
    """What rank 0 of a training streams for each epoch (`say_epoch`), as the driver receives it."""
    lines = []
    for epoch in range(1, epochs + 1):
        metrics = {"epoch": epoch, "loss_g": 1.0 / epoch, "val_miou": 0.5 + epoch / 100, "images_per_s": 40.0}
        record = {"title": "segmenter", "metrics": metrics, "epochs": epochs, "epochs_run": epoch,
                  "seconds": 10.0 * epoch, "seconds_left": 10.0 * (epochs - epoch), "score": "val_miou"}
        lines.append(f"{EPOCH_MARK}{json.dumps(record)}")
    return lines


def test_on_a_terminal_a_training_leaves_one_summary_line_not_a_line_per_epoch(tmp_path, capsys):
    output = RayOutput(tmp_path / "train.log")
    output.epochs = EpochProgress(live=True)
    output.route({"pid": 11, "actor_name": "RayTrainWorker", "lines": epoch_records(3)})
    shown = capsys.readouterr()
    (summary,) = shown.out.splitlines()
    assert summary.startswith("segmenter: 3 epochs in 30s; ") and "val mIoU 0.530" in summary
    assert "epoch 3/3" in shown.err  # the bar, on stderr like every progress bar, gone once closed
    assert len((tmp_path / "train.log").read_text().splitlines()) == 3  # every record kept in the log


def test_in_a_log_or_a_pipe_each_epoch_is_a_line(tmp_path, capsys):
    output = RayOutput(tmp_path / "train.log")
    output.epochs = EpochProgress(live=False)
    output.route({"pid": 11, "actor_name": "RayTrainWorker", "lines": epoch_records(2)})
    assert capsys.readouterr().out.splitlines() == [
        "segmenter epoch 1/2  loss_g 1  val mIoU 0.510  40 img/s  ETA 10s",
        "segmenter epoch 2/2  loss_g 0.5  val mIoU 0.520  40 img/s",
    ]
