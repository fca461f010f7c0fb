"""Run `python -m sandbox.demo` as a user would, in a temp folder on free ports, and watch its processes.

Processes are followed by tree, not by name: every descendant of the demo seen while it runs (sampled
in the background, so run workers that come and go are caught too) is remembered with its start time
(so a reused pid is not mistaken for it) and its process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import _procfs as procfs
from sandbox.dagster_ui import DagsterUi
from sandbox.server import free_port

ROOT = Path(__file__).resolve().parents[2]
# Variables of the developer's shell that would point the demo elsewhere than its temp folder.
_SCRUBBED = (
    "SERVICE_CONFIG",
    "SERVICE_CONFIG_FILE",
    "ORDERS_DB_URL",
    "SANDBOX_URL",
    "STOREFRONT_URL",
    "DAGSTER_INSTANCE",
    "SUPPLIER_REGISTRY",
)


@dataclass(frozen=True)
class Proc(procfs.Stat):
    """One process as /proc shows it: its stat and its command line."""

    command: str


def processes() -> dict[int, Proc]:
    """Every process on the machine (Linux /proc), by pid."""
    found = {}
    for pid in procfs.pids():
        if (stat := procfs.stat(pid)) is not None and (command := procfs.cmdline(pid)) is not None:
            found[pid] = Proc(pid, stat.ppid, stat.pgid, stat.start, stat.state, command.strip())
    return found


def descendants(root: int, table: dict[int, Proc] | None = None) -> set[Proc]:
    """The processes below `root` in the process tree (not `root` itself)."""
    table = table if table is not None else processes()
    return {table[pid] for pid in procfs.tree([root], table)[1:]}


def alive(seen: set[Proc], groups: set[int]) -> list[Proc]:
    """Processes still running (not zombies) that are one of `seen`, or in one of `groups`."""
    now = processes()
    keys = {(proc.pid, proc.start) for proc in seen}
    return [
        proc
        for proc in now.values()
        if proc.state != "Z" and ((proc.pid, proc.start) in keys or proc.pgid in groups)
    ]


@dataclass
class RunningDemo:
    """A demo process started by a test, its settings, and every descendant seen so far."""

    process: subprocess.Popen[bytes]
    folder: Path
    sandbox_url: str
    ui: DagsterUi
    log: Path
    seen: set[Proc]
    _sampling: threading.Event
    _lock: threading.Lock

    def output(self) -> str:
        """What the demo and its children printed so far."""
        return self.log.read_text(errors="replace")

    def sample(self) -> None:
        """Remember the demo's current descendants."""
        found = descendants(self.process.pid)
        with self._lock:
            self.seen |= found

    def seen_so_far(self) -> set[Proc]:
        """Every descendant sampled so far."""
        with self._lock:
            return set(self.seen)

    def wait_for(self, what: str, ready: Callable[[], bool], seconds: float) -> None:
        """Poll `ready` (bounded); fail with the demo's output if the demo dies or time runs out."""
        deadline = time.monotonic() + seconds
        while not ready():
            tail = self.output()[-4000:]
            assert self.process.poll() is None, f"demo exited while waiting for {what}:\n{tail}"
            assert time.monotonic() < deadline, f"{what} not within {seconds:.0f} s:\n{tail}"
            time.sleep(0.5)

    def wait_ready(self, seconds: float = 420) -> None:
        """Until the demo printed that its bootstrap is done."""
        self.wait_for("demo ready", lambda: "demo: ready" in self.output(), seconds)

    def stop(self, signum: int = signal.SIGTERM, seconds: float = 90) -> float:
        """Send `signum` to the demo process and wait (bounded) for it to exit; seconds it took."""
        self.sample()
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=seconds)
        finally:
            self._sampling.set()
        return time.monotonic() - started

    def left_behind(self, seconds: float = 10) -> list[Proc]:
        """Descendants (or members of their process groups) still running after a short grace."""
        seen = self.seen_so_far()
        groups = {proc.pgid for proc in seen} - {os.getpgid(0)}
        deadline = time.monotonic() + seconds
        remaining = alive(seen, groups)
        while remaining and time.monotonic() < deadline:
            time.sleep(0.5)
            remaining = alive(seen, groups)
        return remaining

    def kill_everything(self) -> None:
        """Last resort for a failed test: SIGKILL every process this demo ever had."""
        self._sampling.set()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for proc in alive(self.seen_so_far(), set()):
            with suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


def start_demo(
    folder: Path, *, ignore_sigint: bool = False, env: dict[str, str] | None = None
) -> RunningDemo:
    """Start the demo with its state under `folder` and free ports (SIGINT ignored like `make demo &`)."""
    sandbox_port, ui_port = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    environ.update(
        {
            "SANDBOX_PORT": str(sandbox_port),
            "DAGSTER_PORT": str(ui_port),
            "DAGSTER_HOME": str(folder / "dagster_home"),
            "SANDBOX_DATA_DIR": str(folder / "sandbox_data"),
            "WAREHOUSE_DIR": str(folder / "warehouse"),
            "DEMO_SKUS": "400",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
    )
    log = folder / "demo.log"

    def background_shell() -> None:
        # What a shell does to `cmd &` without job control: the command starts with SIGINT ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.demo"],
            cwd=ROOT,
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=background_shell if ignore_sigint else None,
        )
    stop_sampling = threading.Event()
    demo = RunningDemo(
        process=process,
        folder=folder,
        sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        ui=DagsterUi(f"http://127.0.0.1:{ui_port}"),
        log=log,
        seen=set(),
        _sampling=stop_sampling,
        _lock=threading.Lock(),
    )

    def sample_until_stopped() -> None:
        while not stop_sampling.wait(0.3):
            demo.sample()

    threading.Thread(target=sample_until_stopped, name="demo-process-sampler", daemon=True).start()
    return demo


def answers(url: str) -> bool:
    """True if `url` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
