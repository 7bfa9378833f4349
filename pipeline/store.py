"""The project on object storage (GANSEG_STORE=s3://bucket/prefix): every node works in a local
scratch copy, the store holds the truth, and DVC tracks small manifests.

A stage run with a store
1. pulls what it reads (its dvc.yaml deps that are not code) from the store into the node's scratch
   folder (`scratch_root`), file by file where the content differs; a folder the store lacks but
   the project holds (a user's own data) is pushed first;
2. runs in that scratch folder, exactly as it runs in a project folder;
3. pushes what it wrote (its dvc.yaml outs, metrics and plots): the files, then the output's manifest
   (path, size and MD5 of every file) as the last object, so a reader never takes a half-written
   output for a whole one;
4. leaves in the project folder what DVC tracks: the small files themselves (metrics, plots, the
   tuned config), and for each folder output its manifest alone (`<folder>/MANIFEST.json`), which
   changes exactly when the folder's content does.

A later stage compares the store's manifest with the one DVC checked out in the project and
refuses to read another version. Ray Train's checkpoints go to the store directly
(runtime.storage_path, pipeline/ray/runtime.py); training workers pull the prepared data into their
own node's scratch (`pull_prepared`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs
import yaml

from ganseg.config import Params
from ganseg.dotted import get_dotted
from ganseg.errors import GansegError
from ganseg.fileio import atomic_dir, atomic_write_text
from pipeline.console import say
from pipeline.storage import Location
from pipeline.workspace import project_store

MANIFESTS = ".ganseg/manifests"  # below the store's root (and the scratch folder's): one JSON per output
LOCAL_MANIFEST = "MANIFEST.json"  # what a folder output holds in the project folder
CODE_FOLDERS = ("ganseg/", "pipeline/")


class StoreError(GansegError, RuntimeError):
    """The store lacks an input, or holds another version of it than the project's DVC outputs name."""


def scratch_root(store: Location) -> Path:
    """This node's working copy of the project on `store` (the same folder for every stage on the node)."""
    digest = hashlib.sha1(store.uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "ganseg-store" / digest


def stage_paths(command: str, params: Params, project_root: Path) -> tuple[list[str], list[str]] | None:
    """(reads, writes) of the dvc.yaml stage run by `ganseg <command>`: its data deps inside the
    project, and its outs, metrics and plots, with ${...} taken from `params`; None for a command
    that no stage runs (predict, generate, bench), which works where it is run."""
    dvc_file = project_root / "dvc.yaml"
    if not dvc_file.is_file():
        return None
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    found = next((s for s in stages.values() if s["cmd"].split()[:2] == ["ganseg", command]), None)
    if found is None:
        return None
    values = params.model_dump(mode="json")

    def paths(entries) -> list[str]:
        names = [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]
        return [re.sub(r"\$\{([^}]+)\}", lambda m: str(get_dotted(values, m.group(1))), n) for n in names]

    # A data folder outside the project (an absolute data.source) is read where it is.
    reads = [p for p in paths(found.get("deps")) if not p.startswith(CODE_FOLDERS) and not Path(p).is_absolute()]
    writes = paths(found.get("outs")) + paths(found.get("metrics")) + paths(found.get("plots"))
    return reads, writes


def manifest_of(local: Path) -> dict:
    """{'kind': 'dir' | 'file', 'files': {relative path: {'size', 'md5'}}} of a file or folder."""
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    entries = {(p.relative_to(local).as_posix() if local.is_dir() else ""): _file_entry(p) for p in files}
    return {"kind": "dir" if local.is_dir() else "file", "files": entries}


def _file_entry(path: Path) -> dict:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return {"size": path.stat().st_size, "md5": digest.hexdigest()}


def store_manifest(store: Location, rel: str) -> dict | None:
    found = store.join(MANIFESTS, f"{rel}.json")
    return json.loads(found.read_bytes()) if found.exists() else None


def push(local_root: Path, store: Location, rel: str) -> dict:
    """Upload `local_root/rel` to `store/rel`, then its manifest; drop objects of an older version."""
    local = local_root / rel
    manifest = manifest_of(local)
    old = store_manifest(store, rel) or {"files": {}}
    for name, entry in manifest["files"].items():
        if old["files"].get(name) != entry:
            upload(local / name if name else local, store.join(rel, name) if name else store.join(rel))
    store.join(MANIFESTS, f"{rel}.json").write_text(json.dumps(manifest, sort_keys=True))
    for name in set(old["files"]) - set(manifest["files"]):
        store.filesystem.delete_file(store.join(rel, name).path)
    return manifest


def pull(store: Location, rel: str, local_root: Path) -> int:
    """Make `local_root/rel` what the store's manifest lists: only differing files are downloaded
    (their bytes are returned)."""
    manifest = store_manifest(store, rel)
    if manifest is None:
        raise StoreError(f"{store.join(rel).uri} is not on the store: run the stage that writes {rel} with the"
                         f" same GANSEG_STORE first (dvc repro does)")
    local = local_root / rel
    cached = local_root / MANIFESTS / f"{rel}.json"
    if cached.is_file() and json.loads(cached.read_text()) == manifest and local.exists():
        return 0
    downloaded = 0
    if manifest["kind"] == "file":
        download(store.join(rel), local)
        downloaded = manifest["files"][""]["size"]
    else:
        with atomic_dir(local) as staging:
            for name, entry in manifest["files"].items():
                kept = local / name
                if kept.is_file() and _file_entry(kept) == entry:  # kept by a link, not copied
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    os.link(kept, staging / name)
                else:
                    download(store.join(rel, name), staging / name)
                    downloaded += entry["size"]
    atomic_write_text(cached, json.dumps(manifest, sort_keys=True))
    return downloaded


def download(source: Location, target: Path) -> None:
    """A file, or a folder's files, from the store to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(source.path, str(target), source_filesystem=source.filesystem,
                    destination_filesystem=pafs.LocalFileSystem())


def upload(source: Path, target: Location) -> None:
    if target.is_local:  # a store has no folders to make
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(str(source), target.path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=target.filesystem)


def holds_only_a_manifest(folder: Path) -> bool:
    return folder.is_dir() and [p.name for p in folder.iterdir()] == [LOCAL_MANIFEST]


@contextmanager
def working_root(command: str | None, project_root: Path, params: Callable[[], Params]) -> Iterator[Path]:
    """Where `ganseg <command>` runs: the project folder, or with the project on object storage
    (GANSEG_STORE) this node's working copy of it (`stage_on_store`)."""
    store = project_store() if command else None
    if store is None:
        yield project_root
        return
    with stage_on_store(command, params(), project_root, store) as root:
        yield root


@contextmanager
def stage_on_store(command: str, params: Params, project_root: Path, store: Location) -> Iterator[Path]:
    """Run `ganseg <command>` for the project on `store`: yields the folder to run it in (the
    scratch folder, or the project itself for a command that is no DVC stage)."""
    paths = stage_paths(command, params, project_root)
    if paths is None:
        yield project_root
        return
    reads, writes = paths
    scratch = scratch_root(store)
    for rel in reads:
        _bring_input(rel, project_root, store, scratch)
    print(f"project on {store.uri}; working copy {scratch}")
    yield scratch
    for rel in writes:
        if (scratch / rel).exists():
            manifest = push(scratch, store, rel)
            _leave_for_dvc(scratch, project_root, rel, manifest)


def _bring_input(rel: str, project_root: Path, store: Location, scratch: Path) -> None:
    """Pull `rel` into the scratch folder; push it first when it is the project's own (a user's data)."""
    local = project_root / rel
    on_store = store_manifest(store, rel)
    if on_store is None and not local.exists():
        return  # the stage says in its own words what it misses (train runs without a tuned config)
    if local.exists() and not holds_only_a_manifest(local):
        if on_store is None or on_store["files"] != manifest_of(local)["files"]:
            print(f"pushing {rel} to {store.join(rel).uri}")
            push(project_root, store, rel)
    elif holds_only_a_manifest(local) and on_store is not None:
        tracked = json.loads((local / LOCAL_MANIFEST).read_text())
        if tracked["files"] != on_store["files"]:
            raise StoreError(
                f"{store.join(rel).uri} is another version than the one {rel}/{LOCAL_MANIFEST} names here (another"
                f" checkout or experiment wrote it since): rerun the stage that writes {rel} (dvc repro --force"
                " --single-item STAGE), or give this checkout a GANSEG_STORE prefix of its own"
            )
    pull(store, rel, scratch)


def _leave_for_dvc(scratch: Path, project_root: Path, rel: str, manifest: dict) -> None:
    """The output as DVC tracks it in the project folder: a file itself, a folder by its manifest."""
    target = project_root / rel
    if target.resolve() == (scratch / rel).resolve():
        return
    if manifest["kind"] == "file":
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(scratch / rel, target)
        return
    with atomic_dir(target) as staging:
        atomic_write_text(staging / LOCAL_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def pull_prepared(store: Location, rel: str) -> Path:
    """The prepared data on this node (a training worker's): pulled into the node's scratch folder
    once, under a lock, however many workers the node runs."""
    from filelock import FileLock

    scratch = scratch_root(store)
    scratch.mkdir(parents=True, exist_ok=True)
    with FileLock(str(scratch / ".pull.lock")):
        started = time.perf_counter()
        downloaded = pull(store, rel, scratch)
    if downloaded:
        say(f"pulled {rel} ({downloaded / 1e6:.1f} MB) from {store.uri} to this node in"
            f" {time.perf_counter() - started:.1f} s")
    return scratch / rel

