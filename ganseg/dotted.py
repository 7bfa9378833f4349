"""Dotted keys ('train.lr_g') into nested dicts, as params overrides and the search space name them."""

from __future__ import annotations

from typing import Any

import yaml

from ganseg.errors import ParamsError


def get_dotted(tree: dict, dotted: str) -> Any:
    """The value at a dotted key; None inside a section that is unset (e.g. runtime.fault_injection)."""
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def has_dotted(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        if node.get(part) is None:  # a section missing or null in the file; the schema checks the name
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ParamsError(f"--set {dotted}: {part!r} is a value, not a section of params")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr_g=1e-3' -> ('train.lr_g', 0.001); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"--set expects dotted.key=value, got {text!r}")
    parsed = yaml.safe_load(value) if value.strip() else ""
    if isinstance(parsed, str):
        try:
            parsed = float(parsed)  # YAML 1.1 reads '1e-3' (no dot) as a string
        except ValueError:
            pass
    return key.strip(), parsed
