"""Shared fixtures: a real sandbox server on a free 127.0.0.1 port, a temp warehouse, PostgreSQL (a fresh
database on request), an S3 server (moto, on 127.0.0.1) and the RabbitMQ broker."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import sqlalchemy

from sandbox import server
from sandbox.demo import DEMO_ENV

ROOT = Path(__file__).resolve().parent.parent
# Credentials the sandbox accepts; tests run with the same demo values the README uses.
SANDBOX_ENV = DEMO_ENV


# Tests that boot a live stack (the demo, a daemon and webserver, Celery workers) take one xdist
# worker, one after another (`make test` runs `pytest -n auto --dist loadgroup`): two at once on a
# 2-core machine would starve each other past their time bounds. The other tests run on the other
# workers beside them.
LIVE_STACK_MARKS = ("slow", "distributed")
LIVE_STACK_GROUP = "live_stack"
# Live-stack tests xdist left out of their group, by test id (see pytest_runtest_setup).
UNGROUPED = pytest.StashKey[set[str]]()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Put every live-stack test in one xdist group, and note any that xdist did not group."""
    grouped = [item for item in items if any(item.get_closest_marker(m) for m in LIVE_STACK_MARKS)]
    for item in grouped:
        item.add_marker(pytest.mark.xdist_group(LIVE_STACK_GROUP))
    yield  # xdist's own hook turns the mark into the group (a suffix of the test's id)
    if getattr(config.option, "loadgroup", False):
        suffix = f"@{LIVE_STACK_GROUP}"
        config.stash[UNGROUPED] = {item.nodeid for item in grouped if not item.nodeid.endswith(suffix)}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a live-stack test that xdist would run beside another one."""
    if item.nodeid in item.config.stash.get(UNGROUPED, set()):
        # pytest-xdist 3.8's loadgroup has no effect from pytest 9.2 on (pytest-xdist issue 1386).
        pytest.fail(
            "pytest-xdist did not put this live-stack test in its group, so it could run beside "
            "another one: this pytest and pytest-xdist do not work together for --dist loadgroup "
            "(pyproject.toml pins pytest below 9.2 for this)",
            pytrace=False,
        )


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
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:
        unavailable(
            f"PostgreSQL not reachable at {url} ({type(exc).__name__})",
            "start PostgreSQL or set TEST_PG_URL to enable these tests",
        )
    return url


def unavailable(message: str, how_to_enable: str) -> NoReturn:
    """A service the tests need is missing: a failure in CI (CI set), elsewhere a skip saying how to
    enable the tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}: integration tests must run in CI")
    pytest.skip(f"{message}; {how_to_enable}")


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[sqlalchemy.engine.URL]:
    """A fresh PostgreSQL database (one Dagster instance's), dropped afterwards with whatever is still
    connected to it; its URL, same driver and credentials as pg_url."""
    name = f"dagster_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sqlalchemy.engine.make_url(pg_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------- S3 (moto) and RabbitMQ

BUCKET = "bucket"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the session, with the test bucket created."""
    moto_server = pytest.importorskip("moto.server")
    port = server.free_port()
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    url = f"http://127.0.0.1:{port}"
    s3_client(url).create_bucket(Bucket=BUCKET)
    yield url
    s3.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """What a process needs to reach the moto server: fake credentials and the endpoint."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,  # botocore's own setting, as docs/warehouse.md configures it
        # No machine's ~/.aws config or credentials take part.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def s3_client(endpoint: str) -> Any:
    """A boto3 client on the moto server (independent of the code under test)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh s3://bucket/<prefix> warehouse, exported as WAREHOUSE_DIR with the S3 env."""
    for name, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    root = f"s3://{BUCKET}/wh-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("WAREHOUSE_DIR", root)
    return root


@pytest.fixture
def bucket(s3_endpoint: str) -> Any:
    """A boto3 client on the moto server."""
    return s3_client(s3_endpoint)


def keys_under(client: Any, root: str) -> set[str]:
    """Every object key under an s3://bucket/prefix warehouse root, relative to it."""
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"].removeprefix(prefix) for page in pages for item in page.get("Contents", [])}


BROKER_URL_DEFAULT = "pyamqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="session")
def broker_url() -> str:
    """URL of a reachable RabbitMQ (TEST_BROKER_URL or 127.0.0.1:5672, guest/guest); fails in CI, skips
    elsewhere, when unreachable."""
    url = os.environ.get("TEST_BROKER_URL", BROKER_URL_DEFAULT)
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0)
    except Exception as exc:
        safe = url.split("@")[-1]
        unavailable(
            f"RabbitMQ not reachable at {safe} ({type(exc).__name__})",
            "start RabbitMQ or set TEST_BROKER_URL to enable the distributed tests",
        )
    return url
