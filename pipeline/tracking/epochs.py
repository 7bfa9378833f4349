"""Per-epoch MLflow records of a training run, written by the chief worker: each epoch's figures
once its checkpoint is committed, and the job's picture every `mlflow.log_images_every` epochs."""

from __future__ import annotations

from typing import Callable

from mlflow.tracking import MlflowClient

from ganseg.jobs.base import Picture
from pipeline.tracking import runs


def images_due(epoch: int, every: int, last_epoch: int) -> bool:
    """Every `every` epochs and at the last one; never when `every` is 0."""
    return every > 0 and (epoch % every == 0 or epoch == last_epoch)


class EpochLogger:
    """Logs each epoch to the MLflow run exactly once, and only after its checkpoint is committed.

    A restarted worker group resumes from the last committed checkpoint, so an epoch logged any
    earlier could be trained and logged a second time.
    """

    def __init__(self, tracking_uri: str, run_id: str, every_epoch_metric: str, wait_for_commit: Callable[[], None]):
        """`wait_for_commit` returns once every checkpoint reported so far is committed (Ray Train's
        or Ray Tune's, pipeline/ray/worker.py)."""
        self.client = MlflowClient(tracking_uri)
        self.wait_for_commit = wait_for_commit
        self.run_id = run_id
        logged = self.client.get_metric_history(self.run_id, every_epoch_metric)
        self.last_logged = max((m.step for m in logged), default=0)

    pictures_due = staticmethod(images_due)

    def log_new(self, history: list[dict]) -> None:
        self.wait_for_commit()
        for metrics in history:
            if metrics["epoch"] > self.last_logged:
                runs.log_metrics(self.client, self.run_id, metrics, step=metrics["epoch"])
                self.last_logged = metrics["epoch"]

    def log_picture(self, picture: Picture | None) -> None:
        """An image may be logged again after a restart: it just replaces itself."""
        if picture is not None:
            self.client.log_image(self.run_id, picture.image, artifact_file=picture.artifact_file)
