"""The training jobs: each says how to train one model as a GAN (build its state, run an epoch,
score it on validation data, export it), and the pipeline's one worker loop and one stage driver
run any of them. Above both model packages: a job may use both (the image generator's is judged by
a segmenter).

A job is a class taking (params, data_dir, options); Ray workers get it by reference ("module:Class"),
so that a stage imports just the job it runs.
"""

from __future__ import annotations

import importlib

from ganseg.jobs.base import GanJob, Worker, WorkerJob

__all__ = ["GanJob", "Worker", "WorkerJob", "job_reference", "job_class"]


def job_reference(job: type) -> str:
    return f"{job.__module__}:{job.__qualname__}"


def job_class(reference: str) -> type:
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)
