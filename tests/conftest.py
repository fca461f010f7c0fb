"""Shared fixtures: a real sandbox server on a free 127.0.0.1 port, a temp warehouse, PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import server
from sandbox.demo import DEMO_ENV

ROOT = Path(__file__).resolve().parent.parent
# Credentials the sandbox accepts; tests run with the same demo values the README uses.
SANDBOX_ENV = DEMO_ENV


@dataclass
class Sandbox:
    """A running sandbox server and helpers to steer and inspect it."""

    url: str
    process: subprocess.Popen[bytes]

    def control(self, faults: dict[str, Any] | None = None, reset: bool = False) -> None:
        """Reset the sandbox and/or set fault modes."""
        if reset:
            httpx.post(f"{self.url}/_control/reset", timeout=10).raise_for_status()
        if faults is not None:
            httpx.post(f"{self.url}/_control/faults", json=faults, timeout=10).raise_for_status()

    def pushes(self) -> dict[str, Any]:
        """What the sandbox storefront received."""
        return httpx.get(f"{self.url}/storefront/_pushes", timeout=10).json()

    def counters(self) -> dict[str, int]:
        """The sandbox's request counters."""
        return httpx.get(f"{self.url}/_control/counters", timeout=10).json()


def start_sandbox(seed: int = 7, skus: int = 400) -> Sandbox:
    """Start `python -m sandbox` on a free port with the demo credentials and wait until it answers."""
    process, url = server.start(seed=seed, skus=skus, env=SANDBOX_ENV, timeout=30)
    return Sandbox(url=url, process=process)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    """One sandbox server for the whole session (reset between tests by `sandbox`)."""
    running = start_sandbox()
    yield running
    server.stop(running.process)


@pytest.fixture
def sandbox(sandbox_server: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The session sandbox, reset, with this process's env pointed at it."""
    sandbox_server.control(reset=True)
    monkeypatch.setenv("SANDBOX_URL", sandbox_server.url)
    monkeypatch.setenv("STOREFRONT_URL", f"{sandbox_server.url}/storefront")
    for name, value in SANDBOX_ENV.items():
        monkeypatch.setenv(name, value)
    return sandbox_server


@pytest.fixture
def sandbox_url(sandbox: Sandbox) -> str:
    """Base URL of a reset sandbox."""
    return sandbox.url


@pytest.fixture
def warehouse_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty warehouse folder, also exported as WAREHOUSE_DIR."""
    folder = tmp_path / "warehouse"
    folder.mkdir()
    monkeypatch.setenv("WAREHOUSE_DIR", str(folder))
    return folder


PG_URL_DEFAULT = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """SQLAlchemy URL of a reachable PostgreSQL; fails in CI, skips elsewhere, when unreachable."""
    url = os.environ.get("TEST_PG_URL", PG_URL_DEFAULT)
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:
        message = f"PostgreSQL not reachable at {url} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: integration tests must run in CI")
        pytest.skip(f"{message}; start PostgreSQL or set TEST_PG_URL to enable these tests")
    return url
