"""Where bulk files live: a local folder or an object store (s3://, gs://), through pyarrow's
filesystems, the ones Ray Train and Ray Data take (`RunConfig(storage_filesystem=...)`).

A `Location` is a filesystem and a path on it; folders below it are joined on that path, never on
the URI string (a URI's query, such as `?endpoint_override=...`, stays out of every path).

S3-compatible servers: the endpoint comes from the URI's query (`endpoint_override`, `scheme`), else
from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL. A request is tried RETRY_ATTEMPTS times with AWS's
standard backoff, so a store that is away for some seconds (a restart) delays a stage instead of
failing it; a store that stays away fails it after about half a minute. Credentials come only
from the environment (pyarrow's default chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a
profile, or the node's role); a URI that carries them is refused, so that they never reach params,
logs or MLflow.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from ganseg.errors import ParamsError
from ganseg.fileio import atomic_write_text

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SCHEMES = ("s3", "gs", "gcs")
SECRET_QUERY_KEYS = {"access_key", "secret_key", "session_token"}
RETRY_ATTEMPTS = 8  # pyarrow's default, 3, gives up within a second


class StorageError(ParamsError):
    """A storage URI that cannot be used; the message says why and what to write instead."""


@dataclass(frozen=True)
class Location:
    filesystem: pafs.FileSystem
    path: str  # on `filesystem`: 'bucket/prefix' on a store, an absolute path locally
    uri: str  # for messages: the URI without its query, or the local path

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        return Location(self.filesystem, posixpath.join(self.path, *parts), posixpath.join(self.uri, *parts))

    def exists(self) -> bool:
        return self.filesystem.get_file_info(self.path).type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def write_text(self, text: str) -> None:
        """One object, or one local file replaced atomically (a store writes an object whole or not at all)."""
        if self.is_local:
            atomic_write_text(self.path, text)
            return
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(text.encode())


def is_uri(text: str) -> bool:
    return "://" in text


def location(where: str | Path, base: Path | None = None) -> Location:
    """The Location of a local path (relative to `base`) or of an object-store URI."""
    text = str(where)
    if not is_uri(text):
        path = Path(text).expanduser()
        path = (base / path if base and not path.is_absolute() else path).resolve()
        return Location(pafs.LocalFileSystem(), str(path), str(path))
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise StorageError(f"{text}: unsupported storage scheme {parts.scheme!r}; use a local folder, s3:// or gs://")
    query = parse_qs(parts.query)
    if SECRET_QUERY_KEYS & set(query) or parts.username or parts.password:
        raise StorageError(
            f"{shown_uri(text)}: credentials in a storage URI would be written to params, logs and MLflow; "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile) in the environment instead"
        )
    if not parts.netloc:
        raise StorageError(f"{text}: no bucket; write {parts.scheme}://BUCKET/PREFIX")
    path = posixpath.join(parts.netloc, parts.path.strip("/")).rstrip("/")
    return Location(_filesystem(parts.scheme, query), path, shown_uri(text))


def shown_uri(uri: str) -> str:
    """`uri` without its query (endpoints and options) or user part, for messages and tags."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}".rstrip("/")


def _filesystem(scheme: str, query: dict[str, list[str]]) -> pafs.FileSystem:
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem()
    options = {key: values[-1] for key, values in query.items()}
    endpoint = options.pop("endpoint_override", None) or _endpoint_from_environment()
    kwargs: dict = {"region": options.pop("region", None) or os.environ.get("AWS_REGION") or "us-east-1"}
    if endpoint:
        found = urlsplit(endpoint if is_uri(endpoint) else f"{options.get('scheme', 'https')}://{endpoint}")
        kwargs |= {"endpoint_override": found.netloc, "scheme": options.pop("scheme", found.scheme)}
    elif "scheme" in options:
        kwargs["scheme"] = options.pop("scheme")
    if options:
        raise StorageError(f"unknown storage URI option(s): {', '.join(sorted(options))}; known: endpoint_override, "
                           "scheme, region")
    return PatientS3FileSystem(**kwargs)


class PatientS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem trying each request RETRY_ATTEMPTS times, also once pickled: Ray sends
    the filesystem to its controller and workers, and pyarrow's own pickling drops the retry setting.
    Only the options given here are pickled: credentials come from each node's environment."""

    def __init__(self, **options):
        self.options = options
        super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=RETRY_ATTEMPTS), **options)

    def __reduce__(self):
        return _patient_s3, (self.options,)


def _patient_s3(options: dict) -> PatientS3FileSystem:
    return PatientS3FileSystem(**options)


def _endpoint_from_environment() -> str | None:
    return next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)
