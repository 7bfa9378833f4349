"""The settings a segmenter stage trains with: the params file < the tune stage's best config < --set,
and the one line that says what differs from the params file."""

from __future__ import annotations

import logging
from pathlib import Path

from ganseg.config import Params
from ganseg.dotted import get_dotted, parse_override
from ganseg.fileio import read_json

log = logging.getLogger(__name__)


def effective_settings(params: Params, project_root: Path, best_config: Path, overrides: list[str],
                       params_file: str) -> Params:
    """`layered_params`, with the lines of what differs from the params file printed."""
    shown = best_config.relative_to(project_root) if best_config.is_relative_to(project_root) else best_config
    params, changed = layered_params(params, tuned_overrides(best_config), overrides, str(shown), params_file)
    print(f"settings that differ from {params_file}: {'; '.join(changed)}" if changed
          else f"settings as in {params_file}")
    return params


def tuned_overrides(best_config: Path) -> dict:
    """The tune stage's best overrides, or none when the stage has not run."""
    if not best_config.is_file():
        log.info("no %s: no tuned settings to apply", best_config)
        return {}
    return read_json(best_config)["overrides"]


def layered_params(params: Params, tuned: dict, overrides: list[str], tuned_from: str,
                   params_file: str = "params.yaml") -> tuple[Params, list[str]]:
    """Params by precedence: the params file (over the defaults) < the tuned best config < --set.

    Also one line per effective value that differs from the params file, naming where it came from.
    """
    cli = dict(parse_override(text) for text in overrides)
    effective = params.with_overrides(tuned | cli, source=params_file)
    sources = {key: f"tuned: {tuned_from}" for key in tuned} | {key: "--set" for key in cli}
    before, after = params.model_dump(), effective.model_dump()
    lines = [
        f"{key} = {_shown(get_dotted(after, key))} ({source})"
        for key, source in sources.items()
        if get_dotted(after, key) != get_dotted(before, key)
    ]
    return effective, lines


def _shown(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
