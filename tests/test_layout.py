"""ganseg/ is the library: pure PyTorch, importable and usable without Ray, MLflow or the pipeline."""

import ast
import subprocess
import sys

from tests.conftest import ROOT

LIBRARY = ROOT / "ganseg"
NOT_IN_THE_LIBRARY = {"ray", "mlflow", "pipeline"}
MAX_LINES = 350


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


def test_no_module_is_longer_than_350_lines():
    modules = [*LIBRARY.rglob("*.py"), *(ROOT / "pipeline").glob("*.py")]
    long = {str(path.relative_to(ROOT)): n for path in modules if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long
