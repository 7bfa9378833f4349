"""The project files a stage's code runs: derived from the imports, for checking dvc.yaml's code deps.

A stage runs as `ganseg <stage>`: pipeline/cli.py and pipeline/cli_bench.py with their module-level
imports (their functions are the other commands), then the stage's module
(pipeline/stages/<stage>.py) and everything it imports, inside functions too (an import there runs
when the function does), but not under `if TYPE_CHECKING:` (it never runs). Importing a module runs
the `__init__.py` of each package above it, so those count too; so do the files in LOADED_BY_PATH.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("ganseg", "pipeline")
COMMAND_FILES = {ROOT / "pipeline" / "cli.py", ROOT / "pipeline" / "cli_bench.py"}  # read to module level only
# Files a module runs by their path, not by an import: the served model's code, which MLflow loads
# (and stores in the model) when pipeline/tracking/registry.py logs a model.
LOADED_BY_PATH = {ROOT / "pipeline" / "tracking" / "registry.py": [ROOT / "pipeline" / "served.py"]}


def module_file(name: str) -> Path | None:
    """The project file of module `name`, or None for a name that is not a project module."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module_level_only: bool = False) -> list[str]:
    """Dotted names that `path` imports: each module, and each `from module import name` as module.name
    (which may be a submodule)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.orelse:
                    visit_statement(statement)
            else:
                visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def files_run_by(path: Path, module_level_only: bool = False) -> set[Path]:
    """`path` and every project file its imports run, transitively."""
    seen: set[Path] = set()
    todo = [(path, module_level_only)]
    while todo:
        current, only_module_level = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend((loaded, False) for loaded in LOADED_BY_PATH.get(current, []))
        for name in imported_names(current, only_module_level):
            parts = name.split(".")
            if parts[0] not in PACKAGES:
                continue
            for depth in range(1, len(parts) + 1):  # each package's __init__.py, then the module
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    todo.append((found, found in COMMAND_FILES))
    return seen


def stage_code(stage_module: str) -> set[str]:
    """The project files (relative to the root) that `ganseg <stage>` runs."""
    cli = files_run_by(ROOT / "pipeline" / "cli.py", module_level_only=True) | {ROOT / "pipeline" / "__init__.py"}
    files = cli | files_run_by(ROOT / "pipeline" / "stages" / f"{stage_module}.py")
    return {path.relative_to(ROOT).as_posix() for path in files}


def expand(deps: list[str]) -> set[str]:
    """dvc.yaml's code deps as Python files: a folder stands for every .py file under it."""
    files = set()
    for dep in deps:
        path = ROOT / dep
        if path.is_dir():
            files |= {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")}
        else:
            files.add(dep)
    return files


def as_deps(files: set[str]) -> list[str]:
    """`files` as dvc.yaml lists them: a folder when every .py file under it is needed, else the files."""
    folders = sorted({str(Path(f).parent) for f in files if Path(f).parent != Path(".")}, key=len)
    deps, covered = [], set()
    for folder in folders:
        if any(folder.startswith(f"{done}/") for done in deps):
            continue
        inside = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")}
        if folder not in PACKAGES and inside <= files:
            deps.append(folder)
            covered |= inside
    return sorted(deps + [f for f in files if f not in covered])
