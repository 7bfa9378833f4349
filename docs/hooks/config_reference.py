"""MkDocs hook: the configuration reference, generated from the typed schema `ganseg.config.Params`.

`on_page_markdown` replaces the marker below in configuration.md by one table per section of
params.yaml (key, type, default, description). A nested section (`train.augment`,
`runtime.fault_injection`, the entries of `tune.search_space`, ...) gets a table of its own, with
its defaults as the parent section's default holds them. `reference()` builds the text without
MkDocs; tests/test_config_reference.py checks it.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from ganseg.config import Params

MARKER = "<!-- config-reference -->"
REQUIRED = "required"  # the default cell of a key without a default


@dataclass(frozen=True)
class Row:
    key: str          # dotted, as --set takes it: train.augment.flips
    type: str         # Markdown
    default: Any      # the value the key has when params.yaml leaves it out
    description: str


@dataclass(frozen=True)
class Section:
    key: str          # "" for the top level
    doc: str
    rows: list[Row]


def _model_in(annotation) -> type[BaseModel] | None:
    """The model a field holds: itself, optional, or as the values of a mapping."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (typing.Union, types.UnionType, dict):
        for arg in get_args(annotation):
            if (model := _model_in(arg)) is not None:
                return model
    return None


def anchor(key: str) -> str:
    return "config-" + key.replace(".", "-").replace("<", "").replace(">", "") if key else "config-top-level"


def yaml_flow(value: Any) -> str:
    """A default as params.yaml writes it (YAML flow style)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if value and not any(c in value for c in ",:{}[]#'\"") else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_flow(k)}: {yaml_flow(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no YAML form for {value!r}")


def type_name(annotation) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{yaml_flow(arg)}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(arg) for arg in args)
    if annotation is type(None):
        return "`null`"
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(type_name(arg) for arg in args) + "]"
    if origin is dict:
        return f"mapping {type_name(args[0])} → {type_name(args[1])}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "section"
    if annotation is Any:
        return "any"
    return f"`{annotation.__name__}`"


def constraints(metadata: list) -> str:
    words = []
    for item in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                words.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length} character(s)")
        if getattr(item, "pattern", None):
            words.append(f"matching `{item.pattern}`")
    return ", ".join(words)


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def sections(model: type[BaseModel] = Params, key: str = "", default: BaseModel | None = None) -> list[Section]:
    """Every section of `model`, depth first: its own table, then each nested one after it."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        dotted = f"{key}.{name}" if key else name
        if default is not None:
            value = getattr(default, name)
        else:
            value = REQUIRED if field.is_required() else field.get_default(call_default_factory=True)
        kind = type_name(field.annotation)
        if extra := constraints(field.metadata):
            kind += f", {extra}"
        inner = _model_in(field.annotation)
        if inner is not None and get_origin(field.annotation) is dict:
            entry = f"{dotted}.<key>"
            kind = f"mapping `str` → [section](#{anchor(entry)})"
            nested += sections(inner, entry)
        elif inner is not None:
            kind = kind.replace("section", f"[section](#{anchor(dotted)})")
            nested += sections(inner, dotted, value if isinstance(value, BaseModel) else None)
        description = field.description or (_summary(inner) if inner is not None else "")
        rows.append(Row(dotted, kind, value, _escape(description)))
    doc = model.__dict__.get("__doc__") or ""
    return [Section(key, _escape(inspect.cleandoc(doc)) if doc else "", rows), *nested]


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a section's docstring, for its row in the parent's table."""
    doc = model.__dict__.get("__doc__") or ""
    return inspect.cleandoc(doc).split("\n\n", 1)[0] if doc else ""


def default_cell(value: Any) -> str:
    if value is REQUIRED:
        return REQUIRED
    return "its table" if isinstance(value, BaseModel) else f"`{yaml_flow(value)}`"


def reference() -> str:
    """The reference as Markdown: a heading and a table per section."""
    lines = []
    for section in sections():
        title = f"`{section.key}`" if section.key else "Top level"
        lines += [f"### {title} {{ #{anchor(section.key)} }}", ""]
        if section.doc:
            lines += [section.doc, ""]
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for row in section.rows:
            default = default_cell(row.default)
            lines.append(f"| `{row.key}` | {row.type} | {default} | {row.description} |")
        lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
