"""Peak resident memory of this process from a chosen moment on (Linux: /proc/self).

ru_maxrss cannot do this: Linux keeps its high-water mark across fork and exec, so a child process
starts with its parent's peak. Writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS.
"""

from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")


def _status_mb(key: str) -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{STATUS} has no {key}")


def reset_peak() -> float:
    """Start counting the peak afresh; the resident memory now, in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """The largest resident memory since the last reset_peak (or since the process started), in MB."""
    return _status_mb("VmHWM")
