"""Where the CPU goes while a command runs: `python -m tests.cpu_census [--every S] [--top N]
[--json FILE] -- COMMAND...` runs COMMAND and prints the CPU-seconds of every process it starts
and of those they start in turn (stage drivers, Ray's daemons and workers, servers), grouped by
what each process was, beside the cores' own busy time. docs/tests.md's figures of the suite's CPU
come from it.

Processes are read every `--every` seconds with psutil and known as the command's by their
parent: its pid and its start time, as a pid is used again once its process has ended. Not
counted: what a process uses after its last reading (at most that interval), a process that lives
shorter than it, and one whose parent ended before its first reading. The cores' busy time, which
counts everything on the machine, shows how much that leaves out when nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

IDLE = "ray::IDLE"  # a Ray worker process between tasks
UNNAMED = "(no command line: kernel threads, processes ended before their first reading)"


def kind(cmdline: list[str]) -> str:
    """What a process was, from its command line: Ray's name for its actors and dashboard modules,
    the script (or module) and its subcommand for a Python process, the program's name otherwise."""
    if len(cmdline) == 1:  # a title set with setproctitle, as Ray sets its workers'
        cmdline = cmdline[0].split()
    if not cmdline:
        return UNNAMED
    if cmdline[0].startswith(("ray::", "ray-dashboard-")):
        return cmdline[0].split(".")[0]  # ray::RayTrainWorker.run_train_fn -> ray::RayTrainWorker
    program = Path(cmdline[0]).name
    if not program.startswith("python"):
        return program
    words = iter(cmdline[1:])
    for word in words:
        if word == "-c":
            return f"{program} -c"
        if word in ("-W", "-X"):  # an option with a value
            next(words, None)
        elif word == "-m" or not word.startswith("-"):
            name = next(words, "") if word == "-m" else Path(word).name
            subcommand = next(words, "")
            return f"{name} {subcommand}" if _is_subcommand(subcommand) else name
    return program


def _is_subcommand(word: str) -> bool:
    """`train` in `ganseg train --set ...`; not an option, a path, a setting or a JSON argument."""
    return bool(word) and not word.startswith("-") and not any(mark in word for mark in "/={ ")


@dataclass
class Seen:
    """One process: its most telling name so far and the CPU-seconds of its last reading."""

    name: str
    cpu_s: float = 0.0

    def update(self, name: str, cpu_s: float) -> None:
        # An ended process (a zombie) has no command line; a worker back in Ray's pool keeps its work's name.
        if name != UNNAMED and (name != IDLE or not self.name.startswith("ray::")):
            self.name = name
        self.cpu_s = max(self.cpu_s, cpu_s)


@dataclass
class Census:
    """The process `root` and its descendants, read by `read()`."""

    root: int
    seen: dict = field(default_factory=dict)  # (pid, start time) -> Seen, for the processes counted
    others: set = field(default_factory=set)  # (pid, start time) of processes not ours

    def read(self) -> None:
        new, started = [], {}  # started: pid -> start time of every process now
        for process in psutil.process_iter():  # psutil keeps each process's start time between calls
            try:
                key = (process.pid, process.create_time())
            except psutil.Error:
                continue
            started[key[0]] = key[1]
            if key in self.seen:
                self._update(key, process)
            elif key not in self.others:
                new.append((key, process))
        while new:  # a parent may come after its child in the listing
            adopted = [(key, process) for key, process in new if key[0] == self.root or self._ours(process, started)]
            for key, process in adopted:
                self.seen[key] = Seen(UNNAMED)
                self._update(key, process)
            if not adopted:
                self.others.update(key for key, _ in new)
                break
            new = [(key, process) for key, process in new if key not in self.seen]

    def _ours(self, process: psutil.Process, started: dict) -> bool:
        """Whether the process's parent is one of ours: the same pid and start time, not a process that
        took the pid of one of ours that ended."""
        parent = _parent(process)
        return (parent, started.get(parent)) in self.seen

    def _update(self, key: tuple, process: psutil.Process) -> None:
        """The process's CPU; its name only when it has used CPU since (a process renames itself as it works)."""
        try:
            cpu_s = process_cpu_s(process)
        except psutil.Error:
            return
        seen = self.seen[key]
        if cpu_s > seen.cpu_s or seen.name == UNNAMED:
            seen.update(kind(_cmdline(process)), cpu_s)

    def by_kind(self) -> dict[str, dict]:
        kinds: dict[str, dict] = {}
        for process in self.seen.values():
            row = kinds.setdefault(process.name, {"processes": 0, "cpu_s": 0.0})
            row["processes"] += 1
            row["cpu_s"] += process.cpu_s
        return dict(sorted(kinds.items(), key=lambda item: -item[1]["cpu_s"]))


def _parent(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # ended (a zombie) or gone
        return []


def busy_cpu_s() -> float:
    """CPU-seconds the machine's cores have been busy since boot (steal and I/O wait left out)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


def run(command: list[str], every_s: float = 0.5) -> dict:
    """Run `command`, reading the processes every `every_s` seconds; the figures."""
    census_process = psutil.Process()
    busy_before, own_before, started = busy_cpu_s(), process_cpu_s(census_process), time.monotonic()
    process = subprocess.Popen(command)
    census = Census(process.pid)
    while process.poll() is None:
        census.read()
        time.sleep(every_s)
    census.read()
    kinds = census.by_kind()
    return {"command": command, "returncode": process.returncode, "wall_s": time.monotonic() - started,
            "cores": os.cpu_count(), "busy_cpu_s": busy_cpu_s() - busy_before,
            "census_cpu_s": process_cpu_s(census_process) - own_before,
            "processes": len(census.seen), "processes_cpu_s": sum(row["cpu_s"] for row in kinds.values()),
            "kinds": kinds}


def process_cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def table(figures: dict, top: int) -> str:
    """The `top` kinds by CPU, the rest summed, and the totals."""
    total = figures["processes_cpu_s"] or 1.0
    rows = list(figures["kinds"].items())
    shown, rest = rows[:top], rows[top:]
    if rest:
        shown.append((f"{len(rest)} other kinds", {"processes": sum(r["processes"] for _, r in rest),
                                                   "cpu_s": sum(r["cpu_s"] for _, r in rest)}))
    lines = ["| process | count | CPU-s | share |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {row['processes']} | {row['cpu_s']:.1f} | {row['cpu_s'] / total:.0%} |"
              for name, row in shown]
    available = figures["wall_s"] * figures["cores"]
    processes = f"{figures['processes']} process" + ("es" if figures["processes"] != 1 else "")
    lines += ["", f"{processes} started, {figures['processes_cpu_s']:.1f} CPU-seconds; the cores busy "
              f"{figures['busy_cpu_s']:.1f} of {available:.1f} CPU-seconds ({figures['cores']} cores, "
              f"{figures['wall_s']:.1f} s), {figures['census_cpu_s']:.1f} of them this census's"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cpu_census", description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between readings (default 0.5)")
    parser.add_argument("--top", type=int, default=30, help="kinds of process shown (default 30)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: python -m tests.cpu_census -- COMMAND...")
    figures = run(command, args.every)
    print(table(figures, args.top))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures["returncode"]


if __name__ == "__main__":
    sys.exit(main())
