"""The registered champions served by a real `mlflow models serve` on 127.0.0.1 (the local env
manager), from the session's `dvc repro` and its MLflow server: images POSTed to /invocations come
back as the masks `ganseg predict` writes, byte for byte; masks come back as the images `ganseg
generate` draws for the same seed; bad input gets a 400 that says why, and the server goes on."""

import base64
import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import free_port
from tests.e2e import run
from tests.servers import launch_until_up, ours_answering, stop

pytestmark = pytest.mark.integration

SEGMENTER = "models:/ganseg-segmenter@champion"
IMAGE_GENERATOR = "models:/ganseg-image-generator@champion"


def serve(model: str, env: dict, folder: Path):
    """`mlflow models serve` of `model` on a free port; its URL and process."""
    def launch():
        nonlocal url
        url = f"http://127.0.0.1:{free_port()}"
        command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model, "--env-manager",
                   "local", "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]]
        with (folder / "serve.log").open("a") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return process, lambda: ours_answering(process, url, lambda: _pings(url))

    url = ""
    process = launch_until_up(launch, what=f"mlflow models serve of {model}", seconds=180, log=folder / "serve.log")
    return url, process


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2):
            return True
    except OSError:
        return False


def invoke(url: str, column: str, files: list[bytes], params: dict | None = None) -> tuple[int, dict]:
    """POST the files (base64, as JSON carries bytes) in `column`; the status and the JSON answer."""
    payload = {"dataframe_split": {"columns": [column], "data": [[base64.b64encode(f).decode()] for f in files]}}
    if params:
        payload["params"] = params
    request = urllib.request.Request(f"{url}/invocations", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims width x height grey pixels (and holds none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(
        b"IEND", b"")


@pytest.fixture(scope="module")
def served_segmenter(default_repro, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served-segmenter")
    url, process = serve(SEGMENTER, default_repro.env, folder)
    yield url
    stop(process)


def test_the_served_segmenter_answers_the_masks_predict_writes(default_repro, served_segmenter, three_images,
                                                               tmp_path):
    files = sorted(three_images.iterdir())
    status, answer = invoke(served_segmenter, "image", [path.read_bytes() for path in files])
    assert status == 200, answer
    masks = tmp_path / "masks"
    run(["ganseg", "predict", "--model", SEGMENTER, "--input", str(three_images), "--output", str(masks)], tmp_path,
        default_repro.env)
    served = [base64.b64decode(row["mask"]) for row in answer["predictions"]]
    assert [Image.open(masks / f"{path.stem}.png").size for path in files] == [(90, 70), (40, 33), (24, 20)]
    assert served == [(masks / f"{path.stem}.png").read_bytes() for path in files]


@pytest.mark.parametrize("bad, reason", [
    (b"not an image", "not an image that can be read"),
    (png_claiming(30_000, 30_000), "over data.max_image_pixels"),
], ids=["not-an-image", "too-many-pixels"])
def test_bad_input_gets_a_400_that_says_why_and_the_server_goes_on(served_segmenter, three_images, bad, reason):
    status, answer = invoke(served_segmenter, "image", [(three_images / "a.png").read_bytes(), bad])
    assert status == 400 and "row 1: " in answer["message"] and reason in answer["message"], answer
    status, answer = invoke(served_segmenter, "image", [(three_images / "a.png").read_bytes()])
    assert status == 200 and len(answer["predictions"]) == 1


def test_a_request_without_the_image_column_is_told_its_name(served_segmenter, three_images):
    status, answer = invoke(served_segmenter, "picture", [(three_images / "a.png").read_bytes()])
    assert status == 400 and "image" in answer["message"], answer


def test_the_served_image_generator_draws_what_generate_draws_for_the_same_seed(default_repro, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 3, (36, 20), dtype=np.uint8)).save(masks / "m.png")
    url, process = serve(IMAGE_GENERATOR, default_repro.env, tmp_path)
    try:
        mask = (masks / "m.png").read_bytes()
        first = invoke(url, "mask", [mask], {"seed": 5, "samples": 2})
        again = invoke(url, "mask", [mask], {"seed": 5, "samples": 2})
        other = invoke(url, "mask", [mask], {"seed": 6, "samples": 2})
    finally:
        stop(process)
    assert first[0] == 200 and first == again and other[1] != first[1]
    rows = first[1]["predictions"]
    assert [(row["mask_row"], row["sample"]) for row in rows] == [(0, 0), (0, 1)]
    drawn = tmp_path / "drawn"
    run(["ganseg", "generate", "--model", IMAGE_GENERATOR, "--masks", str(masks), "--output", str(drawn),
         "--samples", "2", "--seed", "5"], tmp_path, default_repro.env)
    assert [base64.b64decode(row["image"]) for row in rows] == [
        (drawn / "images" / f"m_{k}.png").read_bytes() for k in range(2)]
