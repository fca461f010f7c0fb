"""Exactly once without relying on the pool: each batch's journal is taken under a lock that holds
across processes (a file lock locally, a PostgreSQL advisory lock with a lock URL or a Postgres instance)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from resources.config import ConfigError
from resources.push_lock import PushLockTimeout, batch_lock_for, file_lock, postgres_lock
from tests.conftest import SANDBOX_ENV
from tests.storefront.conftest import targets, write_targets

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from resources.config import ConfigError
from resources.push_lock import file_lock, postgres_lock

kind, where = sys.argv[1], sys.argv[2]
lock = file_lock(Path(where), "storefront_sync", "batch-000") if kind == "file" else postgres_lock(
    where, "storefront_sync", "batch-000")
with lock:
    print("locked", flush=True)
    time.sleep(300)
"""

# One sync of batch-000 against the sandbox, started when the go-file appears (so two overlap).
SYNCER = """
import json, sys, time
from pathlib import Path
from tests.storefront.conftest import sync, sync_metadata

warehouse, url, size, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
print("ready", flush=True)
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
result = sync(warehouse, url, config={"push_batch_size": size})
print(json.dumps({"success": result.success, **{k: v for k, v in sync_metadata(result).items()
      if isinstance(v, (int, float, str, bool))}}), flush=True)
"""


def hold(kind: str, where: str) -> subprocess.Popen[str]:
    """A process holding the batch-000 lock until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kind, where], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_file_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    holder = hold("file", str(tmp_path))
    try:
        started = time.monotonic()
        with (
            pytest.raises(PushLockTimeout, match="storefront_sync batch-000: another sync has held"),
            file_lock(tmp_path, "storefront_sync", "batch-000", timeout=0.5),
        ):
            pass
        assert time.monotonic() - started >= 0.5
        with file_lock(tmp_path, "storefront_sync", "batch-001", timeout=0.5):
            pass  # another batch is another lock
    finally:
        holder.kill()  # kill -9: the kernel drops the lock
        holder.wait(timeout=10)
    with file_lock(tmp_path, "storefront_sync", "batch-000", timeout=5):
        pass


@pytest.mark.postgres
def test_postgres_advisory_lock_excludes_other_processes_and_dies_with_its_holder(pg_url):
    holder = hold("postgres", pg_url)
    try:
        with (
            pytest.raises(PushLockTimeout),
            postgres_lock(pg_url, "storefront_sync", "batch-000", timeout=0.5),
        ):
            pass
    finally:
        holder.kill()  # the server drops a dead session's advisory locks
        holder.wait(timeout=10)
    with postgres_lock(pg_url, "storefront_sync", "batch-000", timeout=10):
        pass


def test_the_lock_follows_the_deployment(tmp_path):
    with batch_lock_for(tmp_path, environ={})("storefront_sync", "batch-007"):
        assert (tmp_path / "_locks" / "storefront_sync" / "batch-007.lock").exists()
    unreachable = {"DAGSTER_PG_URL": "postgresql://u:s3cret@127.0.0.1:1/db"}  # the Postgres instance's DB
    with pytest.raises(ConnectionError) as err, batch_lock_for(tmp_path, environ=unreachable)("s", "b"):
        pass
    assert "DAGSTER_PG_URL" in str(err.value) and "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="PUSH_LOCK_URL"):
        batch_lock_for(None, environ={})  # object storage, no URL: refused, not silently unlocked


def overlapping_syncs(sandbox, warehouse_dir: Path, env: dict[str, str]) -> list[dict]:
    """Two processes sync batch-000 at the same moment, with different push_batch_size, no pool."""
    write_targets(warehouse_dir, targets(60))
    # Every push takes 50 ms, so the two syncs overlap for their whole length without a lock.
    sandbox.control(faults={"storefront": {"slow_next": 1000, "latency_ms": 50}})
    go = warehouse_dir.parent / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SYNCER, str(warehouse_dir), sandbox.url, str(size), str(go)],
            cwd=ROOT,
            env={**os.environ, **SANDBOX_ENV, **env},
            stdout=subprocess.PIPE,
            text=True,
        )
        for size in (10, 7)
    ]
    for process in processes:  # both have imported everything and wait for the go
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=180)
        results.append(json.loads(out.strip().splitlines()[-1]))
    results.append({"repeated_versions": sandbox.pushes()["repeated_versions"]})
    return results


def assert_applied_once(sandbox, results: list[dict]) -> None:
    *syncs, counters = results
    assert counters["repeated_versions"] == 0, results
    assert all(result["success"] for result in syncs), results
    seen = sandbox.pushes()
    applied = Counter(entry["sku"] for push in seen["pushes"] for entry in push["prices"])
    assert len(applied) == 60 and set(applied.values()) == {1}
    expected = {r["sku"]: str(r["price"]) for r in targets(60).iter_rows(named=True)}
    assert {sku: row["price"] for sku, row in seen["prices"].items()} == expected
    # The later sync found the earlier one's chunks in the journal and had them confirmed by 409s.
    assert sum(result["duplicates_avoided"] for result in syncs) >= 1


def test_two_overlapping_syncs_with_different_batch_sizes_apply_nothing_twice(sandbox, warehouse_dir):
    results = overlapping_syncs(sandbox, warehouse_dir, {})
    assert_applied_once(sandbox, results)
    assert (warehouse_dir / "_locks" / "storefront_sync" / "batch-000.lock").exists()


@pytest.mark.postgres
def test_two_overlapping_syncs_under_the_postgres_lock_apply_nothing_twice(sandbox, warehouse_dir, pg_url):
    results = overlapping_syncs(sandbox, warehouse_dir, {"PUSH_LOCK_URL": pg_url})
    assert_applied_once(sandbox, results)
    assert not (warehouse_dir / "_locks").exists()
