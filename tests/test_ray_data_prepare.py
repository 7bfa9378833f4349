"""prepare through Ray Data on a real two-node Ray cluster: a head and a second node, both started
with `ray start` on 127.0.0.1, one CPU each."""

import secrets
import subprocess
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from ganseg.config import load_params
from ganseg.data.prepare import prepare_dataset
from tests.conftest import free_port
from tests.e2e import TINY, clean_env, copy_project, run, submit

pytestmark = pytest.mark.integration


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(["ray", "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                             "--dashboard-agent-listen-port", str(free_port()), *args],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def two_nodes():
    """(dashboard address, env) of a head and a second node; every process they started is killed
    afterwards. Each node has its own temp dir: on one machine they would otherwise unpack a job's
    working dir into the same folder, the second node's copy replacing the one the driver runs in."""
    temp_dirs = [tempfile.mkdtemp(prefix="rn", dir="/tmp") for _ in range(2)]  # short: Ray puts sockets under it
    gcs, dashboard = f"127.0.0.1:{free_port()}", free_port()
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    nodes = [_start(["--head", "--port", gcs.split(":")[1], "--dashboard-host", "127.0.0.1",
                     "--dashboard-port", str(dashboard), "--temp-dir", temp_dirs[0]], env)]
    try:
        _wait_for(lambda: subprocess.run(["ray", "status", "--address", gcs], env=env, capture_output=True).returncode == 0)
        nodes.append(_start(["--address", gcs, "--temp-dir", temp_dirs[1]], env))
        _wait_for(lambda: _alive_nodes(gcs, env) == 2)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for node in nodes:
            node.kill()
            node.wait()
        for temp_dir in temp_dirs:
            subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)  # daemons in sessions of their own


def _alive_nodes(gcs: str, env: dict) -> int:
    status = subprocess.run(["ray", "status", "--address", gcs], env=env, capture_output=True, text=True).stdout
    active = status.split("Active:")[-1].split("Pending:")[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


def _wait_for(ready, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the Ray cluster did not come up")
        time.sleep(1)


def test_prepare_job_spreads_blocks_over_both_nodes_and_writes_what_one_process_does(tmp_path, two_nodes):
    address, env = two_nodes
    overrides = TINY | {"data.synthetic.num_images": 200}  # four blocks of pairs
    repo = copy_project(tmp_path / "repo", overrides)
    run(["ganseg", "synthesize"], repo, clean_env())
    result = submit(address, ["--working-dir", ".", "--", "python", "-m", "pipeline.cli", "prepare",
                              "--root", str(repo)], env, cwd=repo)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Ray Data: 4 blocks of up to 64 pairs on 2 node(s)" in output, output[-4000:]

    params = load_params(repo / "params.yaml")
    prepare_dataset(params.data, params.seed, tmp_path / "in_process", progress=False, root=repo)
    _assert_same_files(tmp_path / "in_process", repo / "data" / "prepared")


def test_unusable_files_in_any_block_stop_a_ray_data_prepare_and_replace_nothing(tmp_path, two_nodes):
    address, env = two_nodes
    repo = copy_project(tmp_path / "repo", TINY)
    source = tmp_path / "source"
    for sub in ("images", "masks"):
        (source / sub).mkdir(parents=True)
    for index in range(150):  # three blocks
        Image.fromarray(np.full((16, 16), index, np.uint8)).save(source / "images" / f"{index:03d}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(source / "masks" / f"{index:03d}.png")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(source / "masks" / "003.png")  # not a class id
    (source / "masks" / "140.png").write_bytes(b"not a png")
    previous = repo / "data" / "prepared"
    previous.mkdir(parents=True)
    (previous / "keep.txt").write_text("the last good prepare")
    beside = sorted(p.name for p in previous.parent.iterdir())
    result = submit(address, ["--working-dir", ".", "--", "python", "-m", "pipeline.cli", "prepare", "--root",
                              str(repo), "--set", f"data.source={source}", "--set", "data.image_size=16"],
                    env, cwd=repo)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "2 file(s)" in output, output[-4000:]
    assert "masks/003.png" in output and "masks/140.png" in output
    assert [p.name for p in previous.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in previous.parent.iterdir()) == beside  # no staging folder left


def _assert_same_files(expected, actual) -> None:
    names = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    for name in names:
        assert (actual / name).read_bytes() == (expected / name).read_bytes(), name
