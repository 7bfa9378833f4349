"""docs/configuration.md's reference is generated from the schema: every key, with its default.

The keys and defaults are walked here from `Params()` and the section models themselves, apart
from the hook's own walk, and each must have its row in the Markdown the MkDocs hook writes.
"""

import importlib.util
import re
import sys

import pytest
import yaml

from ganseg.config import FaultInjection, Params, SearchDimension
from tests.conftest import ROOT

HOOK = ROOT / "docs" / "hooks" / "config_reference.py"


def load_hook():
    spec = importlib.util.spec_from_file_location("config_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as MkDocs loads a hook (its dataclasses look it up there)
    spec.loader.exec_module(module)
    return module


hook = load_hook()


def flatten(values: dict, prefix: str = "") -> dict:
    """Dotted key -> value; a nested mapping is a section of its own, listed too."""
    flat = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        flat[key] = value
        if isinstance(value, dict) and key not in {"tune.search_space", "data.palette"}:
            flat |= flatten(value, f"{key}.")
    return flat


def schema_defaults() -> dict:
    """Every key of the schema with its default: what `Params()` holds, plus the keys of the
    sections whose default is not an instance (the optional fault injection, the search space's entries)."""
    defaults = flatten(Params().model_dump())
    defaults |= {f"runtime.fault_injection.{name}": field.get_default()
                 for name, field in FaultInjection.model_fields.items()}
    defaults |= {f"tune.search_space.<key>.{name}": None for name in SearchDimension.model_fields}
    return defaults


def rows(markdown: str) -> dict[str, list[str]]:
    """Key -> the cells of its row, from every table of the reference."""
    found = {}
    for line in markdown.splitlines():
        if match := re.match(r"\| `([^`]+)` \| (.*) \|$", line):
            assert match.group(1) not in found, f"{match.group(1)} has two rows"
            found[match.group(1)] = re.split(r"(?<!\\) \| ", match.group(2))
    return found


REFERENCE = rows(hook.reference())


def test_every_key_of_the_schema_has_a_row_and_no_other_key_has_one():
    assert set(REFERENCE) == set(schema_defaults())
    assert len(REFERENCE) > 100


@pytest.mark.parametrize("key", sorted(schema_defaults()))
def test_each_row_gives_the_default(key):
    default = schema_defaults()[key]
    _, cell, _ = REFERENCE[key]
    if key == "tune.search_space.<key>.type":
        assert cell == "required"
    elif isinstance(default, dict) and key not in {"tune.search_space", "data.palette"}:
        assert cell == "its table"
    else:  # the cell, read as YAML, is the default
        assert cell.startswith("`") and cell.endswith("`")
        value = yaml.safe_load(cell[1:-1])
        if key == "tune.search_space":  # written as params.yaml would, without the entries' nulls
            value = {name: SearchDimension.model_validate(entry).model_dump() for name, entry in value.items()}
        assert value == (list(default) if isinstance(default, tuple) else default)


def test_defaults_are_written_as_in_params_yaml():
    assert REFERENCE["train.lr_g"][1] == "`0.002`"
    assert REFERENCE["data.class_names"][1] == "`[background, membrane, organelle]`"
    assert REFERENCE["data.ignore_index"][1] == "`null`"
    assert REFERENCE["imagegen.augment.brightness"][1] == "`0.0`"  # its section's own default, not AugmentConfig's
    assert REFERENCE["train.augment.brightness"][1] == "`0.1`"
    assert "`auto`" in REFERENCE["train.num_workers"][0] and "`int`" in REFERENCE["train.num_workers"][0]
    assert "≥ 1" in REFERENCE["train.epochs"][0]


def test_descriptions_come_from_the_schema():
    field = Params.model_fields["train"].annotation.model_fields["lambda_adv"]
    assert REFERENCE["train.lambda_adv"][2] == field.description


def test_the_hook_fills_the_marker_of_configuration_md():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page.count(hook.MARKER) == 1
    built = hook.on_page_markdown(page, page=None, config=None, files=None)
    assert hook.MARKER not in built and "| `runtime.fault_injection.at_epoch` |" in built
    assert "docs/hooks/config_reference.py" in (ROOT / "mkdocs.yml").read_text()
