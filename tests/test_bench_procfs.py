"""bench/_procfs.py: the /proc reading the benchmarks and the live-stack tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bench import _procfs as procfs

pytestmark = pytest.mark.skipif(not procfs.PROC.is_dir(), reason="needs Linux /proc")


def test_tree_is_breadth_first_from_the_roots_as_given() -> None:
    table = {
        pid: procfs.Stat(pid, ppid, pid, 0, "S")
        for pid, ppid in ((10, 1), (11, 10), (12, 10), (13, 11), (20, 1), (21, 20))
    }
    assert procfs.tree([10], table) == [10, 11, 12, 13]
    assert procfs.tree([20, 10], table) == [20, 10, 21, 11, 12, 13]
    assert procfs.tree([99], table) == [99]  # a root that is gone is still listed (and first)
    assert procfs.tree([10, 11], table) == [10, 11, 12, 13]  # each process once


def test_a_child_and_its_child_read_from_proc() -> None:
    grandchild = "import time; time.sleep(60)"
    child = (
        "import subprocess, sys; "
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}]); print(p.pid, flush=True); p.wait()"
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        below = int(process.stdout.readline())
        assert procfs.tree([process.pid]) == [process.pid, below]
        stat = procfs.stat(below)
        assert stat is not None and stat.ppid == process.pid and stat.state != "Z"
        assert stat.pgid == os.getpgid(below)
        assert grandchild in (procfs.cmdline(below) or "")
        # The state may change between two reads (a process still starting runs, then sleeps).
        again = procfs.table()[below]
        assert (again.pid, again.ppid, again.pgid, again.start) == (
            stat.pid,
            stat.ppid,
            stat.pgid,
            stat.start,
        )
        assert below in procfs.pids() and os.getpid() in procfs.pids()
    finally:
        for pid in reversed(procfs.tree([process.pid])):
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
    assert procfs.stat(process.pid) is None and procfs.cmdline(process.pid) is None


def test_stolen_seconds_is_the_steal_column_in_seconds(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stat").write_text(
        "cpu  91583 0 28250 1837748 3313 0 974 2083 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    )
    monkeypatch.setattr(procfs, "PROC", tmp_path)
    assert procfs.stolen_seconds() == 2083 / procfs.CLOCK_TICKS
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="unexpected first line"):
        procfs.stolen_seconds()


def test_stolen_seconds_reads_this_machine() -> None:
    first = procfs.stolen_seconds()
    assert 0 <= first <= procfs.stolen_seconds()
