"""Linux /proc, read the one way the benchmarks and the tests need it: processes, their parents, their tree.

Processes are followed by pid and parent pid, never by name. A process can exit between the listing of
/proc and the reading of its files: such a process is left out (`stat`, `cmdline` return None).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/stat's times


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat the project reads."""

    pid: int
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, identifies the process (a pid is reused)
    state: str  # "R", "S", ..., "Z" for a zombie


def pids() -> list[int]:
    """Every pid /proc lists now."""
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def stat(pid: int) -> Stat | None:
    """A process's /proc/<pid>/stat, None if it cannot be read (gone, or not readable)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after its last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return Stat(pid, int(fields[1]), int(fields[2]), int(fields[19]), fields[0])


def cmdline(pid: int) -> str | None:
    """A process's command line, arguments joined by spaces (not stripped); None if it cannot be read."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def table() -> dict[int, Stat]:
    """Every process on the machine whose stat could be read, by pid, in /proc's order."""
    found = {}
    for pid in pids():
        entry = stat(pid)
        if entry is not None:
            found[pid] = entry
    return found


def tree(roots: Iterable[int], processes: Mapping[int, Stat] | None = None) -> list[int]:
    """The roots (as given, gone or not), then every process below them in `processes` (default: now)."""
    # Breadth first: the roots, then each process before its children, siblings in /proc's order.
    processes = table() if processes is None else processes
    children: dict[int, list[int]] = {}
    for entry in processes.values():
        children.setdefault(entry.ppid, []).append(entry.pid)
    found: list[int] = []
    seen: set[int] = set()
    for pid in roots:
        if pid not in seen:
            seen.add(pid)
            found.append(pid)
    for pid in found:  # grows while it is walked
        for child in children.get(pid, []):
            if child not in seen:
                seen.add(child)
                found.append(child)
    return found


def stolen_seconds() -> float:
    """CPU time the hypervisor gave to others while this machine's CPUs wanted to run, since boot.

    The "steal" column of /proc/stat's `cpu` line, summed over CPUs: on a shared VM, a benchmark window
    with seconds of it ran on a slower machine than one without.
    """
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()
    if fields[0] != "cpu" or len(fields) < 9:
        raise ValueError(f"unexpected first line of {PROC / 'stat'}: {' '.join(fields)!r}")
    return int(fields[8]) / CLOCK_TICKS
