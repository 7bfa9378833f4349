"""prepare through Ray Data on a real two-node Ray cluster: a head and a second node, both started
with `ray start` on 127.0.0.1, one CPU each."""

import secrets

import numpy as np
import pytest
from PIL import Image

from ganseg.config import load_params
from ganseg.data.prepare import prepare_dataset
from tests.e2e import TINY, clean_env, copy_project, run, submit
from tests.servers import RayCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_nodes():
    """(dashboard address, env) of a head and a second node, each with its own temp dir: on one
    machine they would otherwise unpack a job's working dir into the same folder, the second node's
    copy replacing the one the driver runs in."""
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    nodes = RayCluster(2, env)
    yield nodes.address, env
    nodes.close()


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
