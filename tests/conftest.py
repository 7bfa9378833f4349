import os

# Before torch loads OpenMP: threads that finish a parallel region wait asleep, not spinning. The
# tests run two pytest workers and their stages' processes on the same cores; with spinning
# threads, each process burns the cores the others wait for (a slice of the suite took 1.6x the
# time). Set in every process the tests start, as they inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ganseg.config import DataConfig, Params  # noqa: E402
from ganseg.contracts import DatasetStats, ModelCard  # noqa: E402
from ganseg.data import prepare  # noqa: E402
from ganseg.data.synthetic import write_synthetic_dataset  # noqa: E402
from ganseg.data.void import VOID  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PARAMS = str(ROOT / "params.yaml")  # for commands a test runs from whatever folder it is in
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
REQUIRE_DATASETS = "GANSEG_REQUIRE_DATASETS"  # set (CI does): a missing real dataset fails its tests

# No telemetry from any test, whichever file runs: MLflow, Ray and DVC, in this process and in
# every process it starts (tests/e2e.py's clean_env keeps these).
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0", "DVC_NO_ANALYTICS": "1"}
for _name, _value in TELEMETRY_OFF.items():
    os.environ[_name] = _value


def shared_dataset(name: str) -> Path:
    """A real dataset beside the project; the test is skipped where it is absent (e.g. a user's clone),
    and fails there when GANSEG_REQUIRE_DATASETS is set."""
    path = SHARED_DATASETS / name
    if not (path / "images").is_dir():
        reason = f"real dataset not available: {path} is absent (it lives beside the project, never in it)"
        if os.environ.get(REQUIRE_DATASETS):
            pytest.fail(f"{reason}; {REQUIRE_DATASETS} is set, so it must be there")
        pytest.skip(reason)
    return path


BUILT_IN_SOURCE = DataConfig().source


def prepare_dataset(cfg: DataConfig, seed: int, out_dir: Path, *args, **kwargs) -> DatasetStats:
    """ganseg's prepare_dataset; for the default data.source (the built-in data, which `dvc repro`'s
    synthesize stage writes) the built-in data of `cfg.synthetic` and `seed` is written beside
    `out_dir` first and prepared from there."""
    if cfg.source == BUILT_IN_SOURCE:
        folder = write_synthetic_dataset(cfg.synthetic, seed, Path(out_dir).parent / "synthetic", progress=False)
        cfg = cfg.model_copy(update={"source": str(folder)})
    return prepare.prepare_dataset(cfg, seed, out_dir, *args, **kwargs)


def write_pair(folder: Path, stem: str, image: np.ndarray, mask: np.ndarray, image_ext: str = ".png") -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{stem}{image_ext}")
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


@pytest.fixture
def refused_port() -> int:
    """A TCP port on 127.0.0.1 held bound, not listening, for the whole test: connections to it are
    refused, and no other server can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def same_state(a, b) -> bool:
    """Equal nested state (dicts, lists, tensors, numbers), tensor by tensor."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def batch(n: int = 4, size: int = 32, seed: int = 0, void: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Random grey images, and masks of three classes by brightness; with `void`, a different number
    of void pixels in every image and the second image void throughout."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 255, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    masks = (images[:, 0] > 150).long() + (images[:, 0] > 215).long()
    if void:
        for i in range(n):
            masks[i, :, : 3 * i] = VOID
        masks[1] = VOID
    return images, masks


def weights_of(*modules: torch.nn.Module) -> list[torch.Tensor]:
    """Copies of the modules' parameters, to compare with after a step."""
    return [p.detach().clone() for module in modules for p in module.parameters()]


def changed(before: list[torch.Tensor], *modules: torch.nn.Module) -> bool:
    """Whether any parameter of `modules` differs from its copy in `before` (from weights_of)."""
    now = [p for module in modules for p in module.parameters()]
    return any(not torch.equal(a, b) for a, b in zip(before, now, strict=True))


def prepared_stats(class_names=("a", "b", "c"), channels=1, image_size=32, fit="tile") -> DatasetStats:
    """What prepare records for a small dataset of these classes (one tile per split, equal pixel shares)."""
    shares = [1 / len(class_names)] * len(class_names)
    return DatasetStats(
        source="synthetic", class_names=list(class_names), num_classes=len(class_names), channels=channels,
        image_size=image_size, fit=fit, counts={"train": 1, "val": 1, "test": 1},
        class_frequency={"train": shares, "val": shares, "test": shares}, skipped_files=0, test_images=1,
    )


def model_card(
    params: Params, class_names=("a", "b", "c"), channels=1, image_size=32, fit="tile", **training
) -> ModelCard:
    """The card of a generator of `params` trained on such a dataset."""
    return ModelCard.for_data(params.model, prepared_stats(class_names, channels, image_size, fit), **training)


def predict_in_process(model_dir: Path, input_dir: Path, output_dir: Path, overlays: bool = False,
                       flips: bool = False) -> dict:
    """`ganseg predict` of a model folder in this process (no Ray): pipeline/prediction.py's summary."""
    from pipeline.prediction import predict_folder

    params = make_tiny_params().with_overrides({"evaluate.flip_tta": flips})
    return predict_folder(params, model_dir.parent, str(model_dir), input_dir, output_dir, overlays, ray_workers=0)


@pytest.fixture(scope="session")
def three_images(tmp_path_factory) -> Path:
    """Images of three sizes for a model that reads grey: one 8-bit, one 16-bit, one RGB TIFF."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 65535, (33, 40), dtype=np.uint16)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "c.tif")
    return folder


@pytest.fixture
def tiny_params() -> Params:
    return make_tiny_params()


def make_tiny_params() -> Params:
    """Params of a tiny segmenter, trained for one epoch on 30 small built-in images."""
    return Params.model_validate(
        {
            "data": {"image_size": 32, "synthetic": {"num_images": 30, "size": 32}},
            "model": {"base_channels": 8, "depth": 2, "disc_channels": 8, "disc_layers": 2},
            "train": {"epochs": 1, "batch_size": 4, "num_workers": 1, "adv_warmup_epochs": 0},
        }
    )


@pytest.fixture(scope="module")
def two_cpu_ray():
    """A fresh local Ray runtime with 2 CPUs for the tests of one module (never someone else's cluster).

    With its own dashboard, as the stages start theirs: Ray Train's placement-group cleaner asks the
    dashboard whether the run's controller is alive, and a runtime without one sends it to port 8265,
    where another test's cluster may answer that it knows no such controller: the cleaner then
    removes the placement group and kills the training mid-run."""
    import ray

    from pipeline.ray.cluster import LOCAL_TRAIN_ENV_VARS

    runtime_env = {"env_vars": dict(LOCAL_TRAIN_ENV_VARS)}
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
             runtime_env=runtime_env)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """One MLflow server for the session: SQLite, artifacts proxied to a folder beside it."""
    from tests.e2e import clean_env
    from tests.servers import mlflow_server, stop

    folder = tmp_path_factory.mktemp("mlflow-server")
    url, process = mlflow_server(folder, str(folder / "mlartifacts"), clean_env(MLFLOW_DISABLE_TELEMETRY="true"))
    yield url
    stop(process)


@pytest.fixture(scope="session")
def default_repro(tracking_server, tmp_path_factory):
    """The one `dvc repro` of the default pipeline (tests/e2e.py's REPRO_SETTINGS) that the pipeline,
    MLflow-server and browser tests read; a test that changes the project works on a copy."""
    from tests.e2e import reproduce

    return reproduce(tmp_path_factory.mktemp("repro"), tracking_server)


# The modules whose tests read the session's reproduced project (default_repro).
REPRO_MODULES = {f"tests/{name}.py" for name in ("test_dvc_pipeline", "test_fault_tolerance", "test_mlflow_server",
                                                 "test_pipeline_integration", "test_predict_cluster", "test_serving")}


def pytest_collection_modifyitems(config, items):
    """REPRO_MODULES lists every module that reads default_repro (the scheduler below relies on it)."""
    readers = {item.nodeid.split("::")[0] for item in items if "default_repro" in item.fixturenames}
    assert readers <= REPRO_MODULES, f"add {sorted(readers - REPRO_MODULES)} to REPRO_MODULES in tests/conftest.py"


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (`make test` runs `-n 2`): each test module runs whole on one worker, so its
    module fixtures are made once, and every module of REPRO_MODULES on the same worker, which
    makes the shared `dvc repro` (with its MLflow server) once."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return "default_repro" if module in REPRO_MODULES else module

    return ModuleScheduling(config, log)
