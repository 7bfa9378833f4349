"""What every `ganseg` command shares: the group, the options of a stage (--params, --root,
--set), its timing and error handling, and where it runs (the project folder, or with the
project on object storage this node's working copy of it: pipeline/store.py)."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import click

from ganseg.config import Params, load_params
from ganseg.devices import FORCE_CPU
from ganseg.errors import GansegError
from pipeline.console import take_closing
from pipeline.store import working_root

DEFAULT_PARAMS = "params.yaml"
PATH = click.Path(path_type=Path)
CLI_HELP = "`ganseg` command line: one subcommand per stage, each reading params.yaml plus --set overrides."
POSITIVE = click.IntRange(min=1)
FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)


@dataclass
class Shared:
    """The options every stage takes: --params, --root (resolved) and the --set overrides."""

    params_file: str
    root: Path
    overrides: list[str]

    def params(self, required: bool = True) -> Params:
        """The params file with --set applied; with required=False a missing file means the defaults."""
        return load_params(self.params_file, self.overrides, required=required)


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order declared, as argparse listed them


@click.group("ganseg", cls=Group, help=CLI_HELP, context_settings={"help_option_names": ["-h", "--help"]})
def ganseg() -> None:
    pass


def stage(group: click.Group, name: str, text: str) -> Callable[[Callable[..., None]], click.Command]:
    """Make `func(shared, **options)` the subcommand `name` of `group`, with the shared options.

    The command times the run and turns a user error into `ganseg <stage>: error: ...` and exit
    status 2; bench subcommands report as `ganseg bench`.
    """
    shown = name if group is ganseg else group.name

    def decorate(func: Callable[..., None]) -> click.Command:
        # short_help too: Click would cut the text to one line in the group's list, argparse showed it whole
        @group.command(name, help=text, short_help=text)
        @click.option("--params", "params_file", type=click.Path(), default=DEFAULT_PARAMS,
                      help="params file (default: params.yaml)")
        @click.option("--root", type=PATH, default=".",
                      help="folder holding data/, models/, results/ and the default MLflow store (default: the"
                      " current folder); on a cluster, a shared mount every node can reach")
        @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="override one param, e.g. --set train.epochs=3 (repeatable; value read as YAML)")
        @functools.wraps(func)  # carries func's own options (__click_params__) over
        def command(params_file: str, root: Path, overrides: tuple[str, ...], **options) -> int:
            start = time.perf_counter()
            take_closing()  # this command's line holds its own results only, not those of earlier calls in the process
            shared = Shared(params_file, root.resolve(), list(overrides))
            try:
                with _where_it_runs(name if group is ganseg else None, shared) as shared:
                    func(shared, **options)
            except (GansegError, FileNotFoundError) as err:  # the message alone
                print(f"ganseg {shown}: error: {err}", file=sys.stderr)
                return 2
            result = take_closing()
            print(f"ganseg {shown} finished in {time.perf_counter() - start:.1f} s" + (f": {result}" if result else ""))
            return 0

        return command

    return decorate


def cpu_option(func: Callable) -> Callable:
    """--cpu: the model runs on the CPU even where a GPU is. It sets GANSEG_CPU=1 (ganseg/devices.py),
    which Ray workers started by this command read as well."""

    def force_cpu(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            os.environ[FORCE_CPU] = "1"

    return click.option("--cpu", is_flag=True, expose_value=False, callback=force_cpu,
                        help="run the model on the CPU even where a GPU is (same as GANSEG_CPU=1)")(func)


@contextmanager
def _where_it_runs(command: str | None, shared: Shared) -> Iterator[Shared]:
    """`shared`, with the root of this node's working copy when the project is on object storage."""
    with working_root(command, shared.root, lambda: shared.params(required=False)) as root:
        yield replace(shared, root=root)
