"""The KubeRay example (deploy/rayjob.yaml) runs the whole DVC pipeline on a cluster with object
storage and no shared volume: checked as YAML, without a cluster."""

import re
import shlex
from urllib.parse import urlsplit

import ray
import yaml

from tests.conftest import ROOT

MANIFEST = ROOT / "deploy" / "rayjob.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
GPU = "nvidia.com/gpu"
VOLUME_CLAIM_KEYS = {"persistentVolumeClaim", "claimName", "volumeClaimTemplate", "volumeClaimTemplates"}


def load() -> dict:
    (doc,) = list(yaml.safe_load_all(MANIFEST.read_text()))
    return doc


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def pod_groups(spec: dict) -> list[dict]:
    cluster = spec["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def runtime_env(spec: dict) -> dict:
    return yaml.safe_load(spec["runtimeEnvYAML"])


def keys_in(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in keys_in(value)}
    if isinstance(node, list):
        return {k for item in node for k in keys_in(item)}
    return set()


def entrypoint_commands(entrypoint: str) -> list[list[str]]:
    """The `python -m pipeline.cli ...` argument lists of a `bash -c 'A && B && ...'` entrypoint."""
    words = shlex.split(entrypoint)
    assert words[:2] == ["bash", "-c"] and len(words) == 3, "one bash -c script (a bare && would split in KubeRay)"
    return [shlex.split(part) for part in words[2].split("&&")]


def secrets_given(container: dict) -> dict[str, str]:
    """{variable: Secret name} for the variables the container takes from a Secret; envFrom
    secretRef gives all of SECRET_KEYS (the Secret holds them)."""
    given = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
             for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            given |= {key: source["secretRef"]["name"] for key in SECRET_KEYS if key not in given}
    return given


def test_rayjob_is_well_formed_with_one_image_and_retries():
    job = load()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].strip()
    assert spec["backoffLimit"] >= 1, "a retry resumes from the checkpoints on the store"
    groups = pod_groups(spec)
    assert spec["rayClusterSpec"]["workerGroupSpecs"], "at least one worker group"
    assert len({containers(g)[0]["image"] for g in groups}) == 1, "the code is in the image: one image for all"
    assert groups[0]["rayStartParams"]["num-cpus"] == "0", "the head only runs drivers"
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_no_volume_claim_anywhere_in_the_manifest():
    assert not keys_in(load()) & VOLUME_CLAIM_KEYS
    assert "PersistentVolumeClaim" not in MANIFEST.read_text()


def test_runtime_env_puts_the_project_on_s3_and_mlflow_on_a_server():
    env = runtime_env(load()["spec"])
    assert env["working_dir"] == "/app"
    variables = env["env_vars"]
    store = urlsplit(variables["GANSEG_STORE"])
    assert store.scheme == "s3" and store.netloc and not store.query
    assert urlsplit(variables["MLFLOW_TRACKING_URI"]).scheme in ("http", "https")
    if "AWS_ENDPOINT_URL" in variables:
        assert urlsplit(variables["AWS_ENDPOINT_URL"]).scheme in ("http", "https")


def test_credentials_stay_out_of_the_runtime_env_and_the_entrypoint():
    spec = load()["spec"]
    for text in (spec["runtimeEnvYAML"], spec["entrypoint"]):
        for key in SECRET_KEYS:
            assert key not in text


def test_every_pod_takes_both_credentials_from_the_secret_the_header_creates():
    (secret,) = re.findall(r"kubectl create secret generic (\S+)", MANIFEST.read_text())
    for group in pod_groups(load()["spec"]):
        container = containers(group)[0]
        assert {key: secrets_given(container).get(key) for key in SECRET_KEYS} == dict.fromkeys(SECRET_KEYS, secret)
        assert not [e for e in container.get("env", []) if e["name"] in SECRET_KEYS and "value" in e]


def test_entrypoint_runs_every_dvc_stage_in_dvc_yaml_order():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    wanted = []
    for stage in stages.values():
        program, command, *_ = stage["cmd"].split()
        assert program == "ganseg"
        wanted.append(command)
    commands = entrypoint_commands(load()["spec"]["entrypoint"])
    assert all(args[:3] == ["python", "-m", "pipeline.cli"] for args in commands)
    assert [args[3] for args in commands] == wanted


def test_gpu_worker_groups_have_the_gpu_limit_a_node_selector_and_the_gpu_toleration():
    groups = load()["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpu_groups = [g for g in groups if any(GPU in c["resources"].get(kind, {})
                                           for c in containers(g) for kind in ("limits", "requests"))]
    assert gpu_groups, "at least one GPU worker group"
    for group in gpu_groups:
        pod = group["template"]["spec"]
        assert int(containers(group)[0]["resources"]["limits"][GPU]) >= 1
        assert pod["nodeSelector"]
        assert any(t["key"] == GPU and t.get("effect", "NoSchedule") == "NoSchedule" for t in pod["tolerations"])


def test_image_workdir_is_the_runtime_working_dir_and_holds_dvc_yaml():
    text = DOCKERFILE.read_text()
    assert re.search(r"^WORKDIR\s+(\S+)", text, re.M).group(1) == runtime_env(load()["spec"])["working_dir"]
    copied = {word for line in re.findall(r"^COPY\s+(.+)$", text, re.M) for word in line.split()[:-1]}
    assert {"params.yaml", "dvc.yaml", "ganseg", "pipeline"} <= copied


def test_ray_version_of_the_job_and_the_image_matches_the_pinned_one():
    pinned = ".".join(ray.__version__.split(".")[:2])
    assert load()["spec"]["rayClusterSpec"]["rayVersion"].startswith(pinned)
    assert re.search(r"^FROM rayproject/ray:(\S+)", DOCKERFILE.read_text(), re.M).group(1).startswith(pinned + ".")
