"""Segmenting a folder of new images with a model folder or an MLflow model URI: what `ganseg
predict` (pipeline/stages/predict.py) does, and `ganseg bench predict` times.

The input and the output may each be a local folder or a folder on object storage (s3://, gs://:
pipeline/storage.py). The images are segmented in this process, or with Ray Data on the workers of
a Ray cluster (pipeline/ray/predict.py) when it runs as a Ray job (`ganseg submit predict ...`);
--ray-workers chooses either way. Both give the same mask bytes.

On one machine, Ray Data is opt-in: on 2 CPUs one process with 2 threads segments a folder faster
than 2 Ray workers of 1 thread each (`ganseg bench predict`), whatever the folder's size; Ray Data
pays where the workers are spread over more nodes, or GPUs.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

from ganseg.config import Params
from ganseg.data.sources import IMAGE_SUFFIXES
from ganseg.segmenter.export import load_model
from ganseg.segmenter.segment_folder import FileSegmenter, write_masks
from pipeline.console import LOG_DIR
from pipeline.storage import Location, location
from pipeline.store import upload
from pipeline.tracking.registry import model_folder


def predict_folder(params: Params, project_root: Path, model: str, input_dir: str | Path, output_dir: str | Path,
                   overlays: bool, ray_workers: int | None = None) -> dict:
    """The model card carries everything the model needs; params only limit the image size and
    choose test-time flips (evaluate.flip_tta), as in the evaluate stage."""
    source, target = location(input_dir, Path.cwd()), location(output_dir, Path.cwd())
    on_ray = uses_ray(ray_workers)
    cfg = (params.data.max_image_pixels, params.evaluate.flip_tta, overlays)
    with model_folder(model, project_root) as model_dir:
        if on_ray:
            from pipeline.ray.cluster import start_ray
            from pipeline.ray.predict import ClusterSegmenter

            load_model(model_dir)  # a folder that is no model stops here, not in the workers
            files = image_names_at(source)
            start_ray(_ray_log(project_root))
            segment = ClusterSegmenter(ray_workers)
            results = segment(model_dir, source, files, *cfg)
        else:
            in_process = FileSegmenter(model_dir, *cfg)
            files = image_names_at(source)
            results = (in_process(name, source.join(name).read_bytes()) for name in files)
        with local_output(target) as out_dir:
            summary = write_masks(results, out_dir, len(files))
    if on_ray:
        nodes = {node for node, _ in segment.files}
        print(f"Ray Data: {len(files)} images on {len(segment.files)} worker(s), {len(nodes)} node(s)")
    print(f"wrote {summary['written']} masks to {target.uri}; {len(summary['failed'])} files skipped")
    return summary


def uses_ray(ray_workers: int | None) -> bool:
    """--ray-workers 0: this process; N: Ray. Unset: Ray on a cluster, i.e. inside a Ray job, whose
    RAY_ADDRESS is the cluster's own (an http:// address is the dashboard that `ganseg submit` sends
    jobs to, not one to join)."""
    if ray_workers is not None:
        return ray_workers > 0
    address = os.environ.get("RAY_ADDRESS", "")
    return bool(address) and not address.startswith(("http://", "https://"))


def image_names_at(source: Location) -> list[str]:
    """The names of the image files directly in `source`, sorted; FileNotFoundError when it is no
    folder or holds none."""
    if source.filesystem.get_file_info(source.path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{source.uri} is not a folder")
    infos = source.filesystem.get_file_info(pafs.FileSelector(source.path))
    names = sorted(info.base_name for info in infos
                   if info.type == pafs.FileType.File and Path(info.base_name).suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise FileNotFoundError(f"{source.uri} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return names


@contextmanager
def local_output(target: Location) -> Iterator[Path]:
    """A local folder to write into: the target itself, or for a store a temporary folder whose files
    are uploaded once all are written."""
    if target.is_local:
        yield Path(target.path)
        return
    with tempfile.TemporaryDirectory(prefix="ganseg-masks-") as folder:
        yield Path(folder)
        upload(Path(folder), target)


def _ray_log(project_root: Path) -> Path:
    """Where Ray's output goes: the project's logs when predict runs in a project, else the temp folder."""
    if (project_root / "dvc.yaml").is_file():
        return project_root / LOG_DIR / "predict.log"
    return Path(tempfile.gettempdir()) / "ganseg-predict-ray.log"
