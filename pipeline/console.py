"""What a stage prints: our own progress lines on the console, Ray's output in the stage's log file.

Ray streams everything its workers and actors print to the driver. The driver here writes all of
it to `results/logs/<stage>.log` and shows on the console only the lines our code marked for it
(`say`), the epochs a training reports (`say_epoch`: a live bar on a terminal, a line per epoch
elsewhere) and Ray's warnings and errors.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

MARK = "[ganseg] "
EPOCH_MARK = "[ganseg epoch] "
LOG_DIR = Path("results/logs")
# Ray's Python log lines carry their level, its autoscaler writes 'Warning:' / 'Error:', and a Python
# warning reads '<Category>Warning: ...'. (Ray Train's own lines carry no level: they stay in the file.)
_WARNING_OR_ERROR = re.compile(r"\b(WARNING|ERROR|CRITICAL|FATAL)\b|\b(Warning|Error): |\wWarning: ")


_CLOSING: list[str] = []


def closing(text: str) -> None:
    """A stage's result, shown on the line that says the stage finished (pipeline/commands.py), so
    that a `dvc repro` of many stages keeps to a line or two each."""
    _CLOSING.append(text)


def take_closing() -> str:
    """The results `closing` collected since the last call, joined; then none are kept."""
    text = "; ".join(_CLOSING)
    _CLOSING.clear()
    return text


def shown_path(path: Path) -> Path:
    """`path` as the console shows it: relative to the current folder when inside it."""
    path = path.resolve()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def say(text: str) -> None:
    """A line for the console from a Ray worker: the driver shows it without Ray's prefix."""
    # Not print(): Ray Train patches it to log as well as print, which would stream the line twice.
    sys.stdout.write(f"{MARK}{text}\n")
    sys.stdout.flush()


def say_epoch(title: str, metrics: dict, epochs: int, epochs_run: int, seconds: float, score: str) -> None:
    """An epoch's figures for the driver's console (`EpochProgress`), from rank 0 of a training that
    has run `epochs_run` epochs in `seconds` since it started (or resumed)."""
    seconds_left = seconds / epochs_run * (epochs - metrics["epoch"])
    record = {"title": title, "metrics": metrics, "epochs": epochs, "epochs_run": epochs_run, "seconds": seconds,
              "seconds_left": seconds_left, "score": score}
    sys.stdout.write(f"{EPOCH_MARK}{json.dumps(record)}\n")
    sys.stdout.flush()


class EpochProgress:
    """The epochs of each training: on a terminal, one live bar (epoch k/n, the latest losses and
    validation score, images/s, time left) that leaves one summary line when the last epoch is in;
    elsewhere (a log file, a pipe, a Ray job's output) one line per epoch, which a log reads better."""

    def __init__(self, live: bool | None = None):
        self.live = sys.stdout.isatty() if live is None else live
        self.bars: dict[str, object] = {}

    def show(self, record: dict) -> None:
        title, metrics, epochs = record["title"], record["metrics"], record["epochs"]
        text = metrics_text(metrics, record["score"])
        if not self.live:
            print(f"{title} {epoch_line(metrics, epochs, record['seconds_left'], record['score'])}", flush=True)
            return
        bar = self.bars.get(title) or self._new_bar(title, epochs)
        left = f"  ETA {duration(record['seconds_left'])}" if record["seconds_left"] else ""
        bar.n = metrics["epoch"]
        bar.set_postfix_str(f"{text}{left}", refresh=True)
        if metrics["epoch"] >= epochs:
            bar.close()
            del self.bars[title]
            took = duration(record["seconds"])
            print(f"{title}: {record['epochs_run']} epochs in {took}; last epoch: {text}", flush=True)

    def _new_bar(self, title: str, epochs: int):
        from tqdm import tqdm

        self.bars[title] = tqdm(total=epochs, desc=title, leave=False, dynamic_ncols=True,
                                bar_format="{desc} {bar} epoch {n}/{total}{postfix}")
        return self.bars[title]


def duration(seconds: float) -> str:
    """45 -> '45s', 80 -> '1m20s', 3725 -> '1h02m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def metrics_text(metrics: dict, score: str = "val_miou") -> str:
    """'loss_g 0.412  loss_d 1.23  val mIoU 0.812  38 img/s': the losses only once they exist, then
    the validation `score`."""
    parts = [f"{key} {metrics[key]:.3g}" for key in ("loss_g", "loss_d") if key in metrics]
    if score in metrics:
        parts.append(f"{'val mIoU' if score == 'val_miou' else score} {metrics[score]:.3f}")
    if "images_per_s" in metrics:
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def epoch_line(metrics: dict, epochs: int, seconds_left: float | None, score: str = "val_miou") -> str:
    eta = f"  ETA {duration(seconds_left)}" if seconds_left else ""
    return f"epoch {metrics['epoch']}/{epochs}  {metrics_text(metrics, score)}{eta}"


def is_warning_or_error(line: str) -> bool:
    return bool(_WARNING_OR_ERROR.search(line))


def quiet_ray_data() -> None:
    """Ray Data's logger keeps handlers of its own (its INFO lines on the console, all of them in Ray's
    session log): on the console, warnings and errors only; and no progress bars of Ray Data's, since
    the stage's own bar counts the images. Call after ray.data is imported."""
    import ray.data
    from ray.util.debug import log_once

    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")  # Ray's warning that its bars are off is spent


class RayOutput:
    """Sends Ray's output (the driver's Ray loggers, and every line its workers stream) to `log_path`."""

    def __init__(self, log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.path = log_path
        self.file = log_path.open("w", buffering=1)
        self.epochs = EpochProgress()

    def take_over_driver_loggers(self) -> None:
        """Before ray.init: Ray's driver-side loggers write to the file; only warnings and errors to the console."""
        handler = logging.StreamHandler(self.file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        ray_logger = logging.getLogger("ray")  # Ray's loggers print to the console, not through the root logger
        for console in ray_logger.handlers:
            console.setLevel(logging.WARNING)
        ray_logger.addHandler(handler)

    def take_over_worker_output(self) -> None:
        """After ray.init: the lines Ray streams from workers go through `route` instead of being printed."""
        receive_worker_output(self.route)

    def route(self, data: dict) -> None:
        """One batch of streamed lines (Ray's dict: pid, lines, actor_name, task_name): all of them to the
        file; ours (marked) to stdout without the mark, warnings and errors to stderr with their source."""
        name = data.get("actor_name") or data.get("task_name") or ""
        source = f"({name} pid={data.get('pid')})".replace("( ", "(")
        for line in data.get("lines", []):
            self.file.write(f"{source} {line}\n")
            if line.startswith(MARK):
                print(line[len(MARK):], flush=True)
            elif line.startswith(EPOCH_MARK):
                self.epochs.show(json.loads(line[len(EPOCH_MARK):]))
            elif is_warning_or_error(line):
                print(f"{source} {line}", file=sys.stderr, flush=True)


def receive_worker_output(handler: Callable[[dict], None]) -> None:
    """After ray.init: every batch of lines Ray streams from its workers to this driver goes to `handler`
    instead of Ray's printing; of the autoscaler's, only its events, as Ray itself shows them.

    Through Ray's private dispatcher, as Ray's own client server (ray/util/client/server/logservicer.py),
    because Ray 2.60 has no public API for it: ray.init(log_to_driver=...) and RAY_LOG_TO_DRIVER only turn
    the stream on or off, ray.LoggingConfig only formats the workers' own logging, RAY_DEDUP_LOGS and
    RAY_COLOR_PREFIX only change Ray's printing, and ray.util.state.get_log reads a log file afterwards.
    """
    from ray._private.ray_logging import global_worker_stdstream_dispatcher
    from ray._private.worker import filter_autoscaler_events

    def receive(data: dict) -> None:
        if data.get("pid") == "autoscaler":  # its status dumps are noise
            data = data | {"lines": list(filter_autoscaler_events(data.get("lines", [])))}
        handler(data)

    global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")  # registered by ray.init
    global_worker_stdstream_dispatcher.remove_handler("ganseg")  # an earlier Ray runtime's, in this process
    global_worker_stdstream_dispatcher.add_handler("ganseg", receive)
