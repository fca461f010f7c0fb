"""Start and stop `python -m sandbox` as a real server process on a free 127.0.0.1 port."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody is listening on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    *,
    seed: int = 7,
    skus: int = 400,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    quiet: bool = False,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the sandbox and wait (bounded) until it answers; returns the process and its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "sandbox", "--port", str(port), "--seed", str(seed), "--skus", str(skus)]
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=output)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sandbox exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/_health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"sandbox did not start within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the sandbox, killing it if it does not exit within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def running(**kwargs: object) -> Iterator[str]:
    """The sandbox for the duration of a with-block; yields its base URL."""
    process, url = start(**kwargs)  # type: ignore[arg-type]
    try:
        yield url
    finally:
        stop(process)
