"""The KubeRay example must at least be a well-formed RayJob that runs our train stage."""

import ray
import yaml

from tests.conftest import ROOT

MANIFEST = ROOT / "deploy" / "rayjob.yaml"


def load() -> dict:
    (doc,) = list(yaml.safe_load_all(MANIFEST.read_text()))
    return doc


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def mounts(container: dict) -> set[str]:
    return {m["mountPath"] for m in container.get("volumeMounts", [])}


def test_rayjob_has_the_required_fields():
    job = load()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert "pipeline.cli train" in spec["entrypoint"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    cluster = spec["rayClusterSpec"]
    assert containers(cluster["headGroupSpec"])[0]["image"]
    assert cluster["workerGroupSpecs"], "at least one worker group"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert containers(group)[0]["resources"]["limits"].get("nvidia.com/gpu")


def test_ray_version_matches_the_pinned_one():
    pinned = ".".join(ray.__version__.split(".")[:2])
    assert load()["spec"]["rayClusterSpec"]["rayVersion"].startswith(pinned)


def test_every_pod_mounts_the_root_the_entrypoint_uses():
    spec = load()["spec"]
    args = spec["entrypoint"].split()
    root = args[args.index("--root") + 1]
    cluster = spec["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert all(root in mounts(containers(g)[0]) for g in groups)
    assert f"runtime.storage_path={root}" in spec["entrypoint"]
