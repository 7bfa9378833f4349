"""ganseg/ is the library: pure PyTorch, importable and usable without Ray, MLflow or the pipeline."""

import ast
import subprocess
import sys

from tests.conftest import ROOT

LIBRARY = ROOT / "ganseg"
NOT_IN_THE_LIBRARY = {"ray", "mlflow", "pipeline"}
MAX_LINES = 350
# What every Ray Train worker and tune trial imports to run a training job.
WORKER_MODULES = ["ganseg.jobs.segmenter", "ganseg.jobs.imagegen", "ganseg.jobs.synthetic", "pipeline.ray.worker"]


def library_modules() -> list[str]:
    names = (".".join(path.relative_to(ROOT).with_suffix("").parts) for path in LIBRARY.rglob("*.py"))
    return sorted(name.removesuffix(".__init__") for name in names)


def imported_names(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module


def test_no_library_module_imports_ray_mlflow_or_the_pipeline():
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(LIBRARY.rglob("*.py"))
        for line, name in imported_names(ast.parse(path.read_text()))
        if name.split(".")[0] in NOT_IN_THE_LIBRARY
    ]
    assert not found


def test_importing_every_library_module_loads_neither_ray_nor_mlflow():
    code = (
        "import importlib, sys\n"
        f"for name in {library_modules()!r}: importlib.import_module(name)\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'ray', 'mlflow'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert len(library_modules()) > 20  # every module was found, subpackages included


def test_the_stage_drivers_leave_torchvision_to_the_workers():
    """torchvision takes about 2 s of CPU to import (it loads torch._dynamo): only the code that
    augments or deforms training pairs, which runs in the training workers, imports it."""
    drivers = [f"pipeline.stages.{path.stem}" for path in (ROOT / "pipeline" / "stages").glob("*.py")
               if path.stem not in ("__init__", "bench")]
    assert not imports([*drivers, "pipeline.cli", "pipeline.served"], "torchvision")
    assert len(drivers) >= 10


def test_training_leaves_matplotlib_to_the_figures_of_evaluation_and_benches():
    """pyplot takes about 0.6 s of CPU to import; the training jobs, which every Ray Train worker
    and tune trial imports, draw with Pillow alone."""
    assert not imports(WORKER_MODULES, "matplotlib")


def test_only_the_chief_worker_imports_mlflow():
    """MLflow takes about 2.5 s of CPU to import: the other workers of a Ray Train group, which
    log nothing, start without it; the chief imports it for its epoch logger."""
    assert not imports([*WORKER_MODULES, "ray.train.torch", "ray.tune"], "mlflow")
    assert imports(["pipeline.tracking.epochs"], "mlflow")


def imports(modules: list[str], package: str) -> bool:
    """Whether importing `modules`, in a fresh interpreter, loads `package`."""
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            f"print({package!r} in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_no_module_is_longer_than_350_lines():
    modules = [*LIBRARY.rglob("*.py"), *(ROOT / "pipeline").rglob("*.py")]
    long = {str(path.relative_to(ROOT)): n for path in modules if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long


def module_of(path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Each module of ganseg/ and pipeline/ -> the project modules it imports anywhere in its text:
    at the top, inside functions and under TYPE_CHECKING alike (a module imported as `from a import
    b` counts as a.b when a/b.py exists)."""
    paths = [*LIBRARY.rglob("*.py"), *(ROOT / "pipeline").rglob("*.py")]
    modules = {module_of(path) for path in paths}
    graph = {}
    for path in paths:
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                          for alias in node.names}
        graph[module_of(path)] = {name for name in found if name in modules} - {module_of(path)}
    return graph


def test_no_import_cycle_among_the_projects_modules():
    graph, state, cycles = import_graph(), {}, []

    def visit(module, trail):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(" -> ".join(trail[trail.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles


def test_the_two_model_packages_do_not_import_each_other():
    graph = import_graph()
    crossing = [f"{module} imports {imported}" for module, imports in graph.items() for imported in imports
                for mine, theirs in (("ganseg.segmenter", "ganseg.imagegen"), ("ganseg.imagegen", "ganseg.segmenter"))
                if module.startswith(mine) and imported.startswith(theirs)]
    assert not crossing


def test_checkpoints_is_a_leaf_of_the_library():
    assert {name for name in import_graph()["ganseg.checkpoints"] if name.startswith("ganseg.")} == {"ganseg.errors"}


def test_no_stage_imports_another():
    stages = {name for name in import_graph() if name.startswith("pipeline.stages.")}
    found = [f"{stage} imports {imported}" for stage in stages for imported in import_graph()[stage] if imported in stages]
    assert not found


def test_the_served_models_code_needs_only_mlflow_pandas_and_ganseg():
    """pipeline/served.py is stored in every logged model with the ganseg package alone: an
    import of the rest of the pipeline would fail where the model is served."""
    tree = ast.parse((ROOT / "pipeline" / "served.py").read_text())
    roots = {name.split(".")[0] for _, name in imported_names(tree)}
    assert roots <= {"__future__", "mlflow", "pandas", "ganseg"}, roots
