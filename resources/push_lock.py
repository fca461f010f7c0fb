"""A lock per push batch that holds across processes and machines, so one batch is synced by one
writer at a time whatever the concurrency pools say (docs/decisions.md, "Exactly once without the pool").

- A PostgreSQL session advisory lock when `PUSH_LOCK_URL` is set, or the instance is on PostgreSQL
  (`DAGSTER_PG_URL`, deploy/postgres/dagster.yaml): every process and machine that can reach the
  database shares it, and the server drops it when the holder's connection dies (`kill -9`).
- Otherwise an exclusive `flock` on `<WAREHOUSE_DIR>/_locks/<key>/<batch>.lock`: every process on the
  machine (or sharing that filesystem) shares it, and the kernel drops it when the holder dies.
A warehouse on object storage has no file to lock: it needs one of the URLs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from resources.config import ConfigError

LOCK_URL_ENVS = ("PUSH_LOCK_URL", "DAGSTER_PG_URL")
# Another sync's push of the batch, retries and Retry-After waits included; less than the push job's
# max runtime (pricing_assets/push_sensor.py), so a waiting run fails by itself, not by monitoring.
DEFAULT_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.1

# A lock: (name, batch) -> a context manager holding it.
BatchLock = Callable[[str, str], AbstractContextManager[None]]


class PushLockTimeout(RuntimeError):
    """Another sync held the batch's lock for longer than the timeout."""


def lock_id(name: str, batch: str) -> int:
    """The advisory lock id of (name, batch): a signed 64-bit integer, the same in every process."""
    digest = hashlib.sha256(f"{name}\0{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_url(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(env var name, PostgreSQL URL) for the advisory lock, or None for a file lock."""
    env = os.environ if environ is None else environ
    for name in LOCK_URL_ENVS:
        if env.get(name):
            return name, env[name]
    return None


def _libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL (postgresql+psycopg2://) as libpq takes it (postgresql://)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ConfigError(f"push lock URL must be postgresql://..., got scheme {scheme!r}")
    return f"postgresql://{rest}"


def _waited_too_long(name: str, batch: str, timeout: float) -> PushLockTimeout:
    return PushLockTimeout(
        f"{name} {batch}: another sync has held its push lock for more than {timeout:.0f} s; "
        "nothing was sent (see docs/pricing_operations.md, 'A push lock that is never released')"
    )


@contextmanager
def postgres_lock(
    url: str,
    name: str,
    batch: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    source: str = "PUSH_LOCK_URL",
) -> Iterator[None]:
    """Hold `pg_advisory_lock(lock_id(name, batch))` on a connection of its own."""
    import psycopg2

    try:
        connection = psycopg2.connect(_libpq_url(url), connect_timeout=10, application_name="push_lock")
    except psycopg2.Error as exc:
        # The URL may carry a password: name the variable, not the value.
        raise ConnectionError(
            f"push lock: cannot connect to the database in {source}: {type(exc).__name__}"
        ) from None
    connection.autocommit = True
    key = lock_id(name, batch)
    try:
        deadline = time.monotonic() + timeout
        with connection.cursor() as cursor:
            while True:
                cursor.execute("select pg_try_advisory_lock(%s)", (key,))
                if cursor.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    raise _waited_too_long(name, batch, timeout)
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("select pg_advisory_unlock(%s)", (key,))
    finally:
        connection.close()


@contextmanager
def file_lock(
    folder: Path, name: str, batch: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> Iterator[None]:
    """Hold an exclusive flock on `<folder>/<name>/<batch>.lock` (the file itself stays, empty)."""
    path = folder / name / f"{batch}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _waited_too_long(name, batch, timeout) from None
                time.sleep(POLL_SECONDS)
        yield  # the lock goes with the descriptor, also when the process is killed
    finally:
        os.close(fd)


def batch_lock_for(
    warehouse_root: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> BatchLock:
    """The batch lock this deployment uses: PostgreSQL when a URL is configured, else a file lock
    under the local warehouse root (None: the warehouse is on object storage)."""
    configured = lock_url(environ)
    if configured is not None:
        source, url = configured
        return lambda name, batch: postgres_lock(url, name, batch, timeout=timeout, source=source)
    if warehouse_root is None:
        raise ConfigError(
            "push lock: the warehouse is on object storage, where no file can be locked; set PUSH_LOCK_URL "
            "(or DAGSTER_PG_URL) to a PostgreSQL database every pusher can reach"
        )
    folder = warehouse_root / "_locks"
    return lambda name, batch: file_lock(folder, name, batch, timeout=timeout)


__all__ = [
    "BatchLock",
    "PushLockTimeout",
    "batch_lock_for",
    "file_lock",
    "lock_id",
    "lock_url",
    "postgres_lock",
]
