"""The warehouse on object storage (WAREHOUSE_DIR=s3://bucket/prefix) against a real S3 server.

moto's server mode runs on a free 127.0.0.1 port for the session (`s3_endpoint`, tests/conftest.py);
botocore (under s3fs) finds it through AWS_ENDPOINT_URL_S3, as any S3-compatible store would be
configured (docs/warehouse.md).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    DagsterInstance,
    Definitions,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from pricing_assets.reconcile import (
    RECONCILE_JOB_NAME,
    RECONCILE_RUN_CONFIG,
)
from resources import warehouse as wh
from resources.config import ConfigError
from resources.push_lock import batch_lock_for
from resources.push_state import MARK_SCHEMA, MarkStore, empty_marks
from resources.warehouse import Warehouse, WarehouseIOManager
from tests.conftest import BUCKET, keys_under, s3_env

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parent.parent
batches = StaticPartitionsDefinition(["batch-000", "batch-001"])


def money_frame(n: int = 3, factor: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku": [f"S{i}" for i in range(n)],
            "price": [Decimal("1.10") * (i + 1) * factor for i in range(n)],
        },
        schema={"sku": pl.String, "price": pl.Decimal(20, 4)},
    )


# ---------------------------------------------------------------- round trip


def test_warehouse_resource_round_trip(s3_root, bucket):
    warehouse = Warehouse()
    assert warehouse.local_root() is None
    path = warehouse.write(money_frame(), ["catalog"])
    assert str(path) == f"{s3_root}/catalog.parquet"
    assert warehouse.exists(["catalog"])
    assert warehouse.read(["catalog"]).equals(money_frame())

    for batch in batches.get_partition_keys():
        warehouse.write(money_frame(factor=2).with_columns(batch=pl.lit(batch)), ["offers", "alpha"], batch)
    both = warehouse.read_partitions(["offers", "alpha"])
    assert both is not None and both.height == 6
    assert both.get_column("batch").to_list() == ["batch-000"] * 3 + ["batch-001"] * 3
    one = warehouse.read_partitions(["offers", "alpha"], ["batch-001", "batch-009"])  # one never written
    assert one is not None and set(one.get_column("batch")) == {"batch-001"}
    assert warehouse.read_partitions(["offers", "nobody"]) is None
    assert not warehouse.exists(["offers", "alpha"], "batch-009")
    with pytest.raises(FileNotFoundError, match="batch-009"):
        warehouse.read(["offers", "alpha"], "batch-009")

    assert warehouse.read_json(["catalog"], "state") is None
    warehouse.write_json({"etag": "abc"}, ["catalog"], "state")
    assert warehouse.read_json(["catalog"], "state") == {"etag": "abc"}
    assert warehouse.remove_orphan_temp_files() == []

    assert keys_under(bucket, s3_root) == {
        "catalog.parquet",
        "catalog.state.json",
        "offers/alpha/batch-000.parquet",
        "offers/alpha/batch-001.parquet",
    }


def test_a_listing_sees_what_another_process_wrote(s3_root, bucket):
    """No listing cache: a long-lived process's glob sees objects written elsewhere after its first one."""
    warehouse = Warehouse()
    warehouse.write(money_frame(), ["t"], "batch-000")
    assert warehouse.read_partitions(["t"]).height == 3
    prefix = s3_root.removeprefix(f"s3://{BUCKET}/")
    other = pl.DataFrame({"sku": ["X"], "price": [Decimal("9")]}, schema=money_frame().schema)
    buffer = io.BytesIO()
    other.write_parquet(buffer)
    bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/t/batch-001.parquet", Body=buffer.getvalue())
    assert warehouse.read_partitions(["t"]).height == 4
    assert warehouse.exists(["t"], "batch-001")


def test_the_listing_helpers_of_the_assets_work_on_s3(s3_root):
    """The code that globs the warehouse itself (freshness, history days) sees the objects."""
    from pricing_assets.history_assets import PRICE_HISTORY_KEY, written_days
    from pricing_assets.offers_freshness import newest_fetch_by_batch
    from tests.pricing.wiring import write_offers

    warehouse = Warehouse()
    when = datetime(2026, 11, 30, 12, tzinfo=UTC)
    write_offers(warehouse, "alpha", "batch-000", {"SKU-1": "1.00"}, fetched_at=when)
    write_offers(warehouse, "alpha", "batch-001", {"SKU-2": "2.00"}, fetched_at=when)
    assert set(newest_fetch_by_batch(warehouse, "alpha", skip=["batch-001"])) == {"batch-000"}
    assert newest_fetch_by_batch(warehouse, "nobody") == {}
    assert written_days(warehouse) == []
    for day in ("2026-11-29", "2026-11-30"):
        warehouse.write(pl.DataFrame({"day": [day]}), PRICE_HISTORY_KEY.path, day)
    assert written_days(warehouse) == ["2026-11-29", "2026-11-30"]


def test_io_manager_round_trip_partitioned_and_not(s3_root, bucket):
    @asset
    def catalog() -> pl.DataFrame:
        return money_frame()

    @asset(key=["supplier_offers", "alpha"], partitions_def=batches)
    def offers(catalog: pl.DataFrame) -> pl.DataFrame:
        return catalog.with_columns(pl.col("price") * 2)

    @asset(partitions_def=batches, ins={"offers": AssetIn(key=["supplier_offers", "alpha"])})
    def best(offers: pl.DataFrame) -> pl.DataFrame:
        return offers.filter(pl.col("sku") != "S0")

    resources = {"io_manager": WarehouseIOManager()}
    assert materialize([catalog], resources=resources).success
    for batch in batches.get_partition_keys():
        selection = [offers.key, best.key]
        result = materialize(
            [catalog, offers, best], selection=selection, partition_key=batch, resources=resources
        )
        assert result.success
        metadata = result.asset_materializations_for_node("best")[0].metadata
        assert metadata["path"].value == f"{s3_root}/best/{batch}.parquet"

    warehouse = Warehouse()
    assert warehouse.read(["catalog"]).equals(money_frame())
    stored = warehouse.read(["supplier_offers", "alpha"], "batch-001")
    assert stored.drop("batch").equals(money_frame().with_columns(pl.col("price") * 2))
    assert set(stored.get_column("batch")) == {"batch-001"}
    assert warehouse.read_partitions(["best"]).height == 4
    assert keys_under(bucket, s3_root) == {
        "catalog.parquet",
        "supplier_offers/alpha/batch-000.parquet",
        "supplier_offers/alpha/batch-001.parquet",
        "best/batch-000.parquet",
        "best/batch-001.parquet",
    }


def test_a_lazy_input_reads_from_object_storage(s3_root):
    @asset
    def catalog() -> pl.DataFrame:
        return money_frame()

    @asset
    def count(catalog: pl.LazyFrame) -> pl.DataFrame:
        return catalog.select(pl.len()).collect()

    assert materialize([catalog, count], resources={"io_manager": WarehouseIOManager()}).success
    assert Warehouse().read(["count"]).item() == 3


# ---------------------------------------------------------------- atomicity


def test_a_write_failing_midway_leaves_the_previous_object(s3_root):
    warehouse = Warehouse()
    warehouse.write(money_frame(), ["catalog"])

    def half_then_fail(self, file, **kwargs):
        file.write(b"PAR1" + b"\0" * 1000)  # some bytes of the new file, then the writer dies
        raise RuntimeError("disk full")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError, match="disk full"):
        patch.setattr(pl.DataFrame, "write_parquet", half_then_fail)
        warehouse.write(money_frame(n=50, factor=3), ["catalog"])
    assert warehouse.read(["catalog"]).equals(money_frame())


def test_a_failing_upload_leaves_the_previous_object(s3_root):
    """The PUT itself fails (connection dropped): the store keeps the previous object."""
    warehouse = Warehouse()
    warehouse.write(money_frame(), ["catalog"])
    fs = warehouse.root().fs

    def broken(path, data, **kwargs):
        raise ConnectionResetError("connection reset by peer")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(ConnectionResetError):
        patch.setattr(fs, "pipe_file", broken)
        warehouse.write(money_frame(factor=7), ["catalog"])
    assert warehouse.read(["catalog"]).equals(money_frame())


WRITER = """
import sys, polars as pl
from resources.warehouse import Warehouse
rows = int(sys.argv[1])
warehouse = Warehouse()
version = 0
print("ready", flush=True)
while True:
    version += 1
    frame = pl.DataFrame({"version": [version] * rows, "n": list(range(rows))})
    warehouse.write(frame, ["big"])
"""


def test_readers_never_see_half_an_object_and_a_killed_writer_leaves_a_whole_one(s3_root, s3_endpoint):
    """A subprocess rewrites a multi-MB table in a loop and is SIGKILLed at some point mid-write;
    readers meanwhile always get a whole, consistent version, and so does a reader afterwards."""
    rows = 400_000  # a few MB of Parquet per version: each PUT takes a while on the wire
    env = {**os.environ, **s3_env(s3_endpoint), "WAREHOUSE_DIR": s3_root, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(rows)], env=env, cwd=ROOT, stdout=subprocess.PIPE
    )
    seen: list[int] = []
    failures: list[str] = []
    stop = threading.Event()
    warehouse = Warehouse(base_dir=s3_root)

    def check(frame: pl.DataFrame) -> int:
        versions = frame.get_column("version").unique().to_list()
        if (
            frame.height != rows
            or len(versions) != 1
            or frame.get_column("n").sum() != rows * (rows - 1) // 2
        ):
            failures.append(f"torn: {frame.height} rows, versions {versions[:5]}")
        return versions[0]

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(check(warehouse.read(["big"])))
            except FileNotFoundError:
                time.sleep(0.05)  # not written yet
            except Exception as exc:  # a half object would fail to parse: that is the failure
                failures.append(f"{type(exc).__name__}: {exc}")

    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while not warehouse.exists(["big"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        while len(set(seen)) < 3 and time.monotonic() < deadline:  # a few versions replaced under readers
            time.sleep(0.05)
        time.sleep(0.137)  # an arbitrary point of the next write
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert not failures, failures[:3]
    assert len(set(seen)) >= 3, seen
    last = check(warehouse.read(["big"]))
    assert not failures, failures
    assert last >= max(seen)


class StallingProxy:
    """A TCP proxy to the S3 server that forwards a PUT only up to `after` body bytes, then stalls it."""

    def __init__(self, upstream: str, after: int) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.after = after
        self.stalled = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        forwarded, in_put = 0, False
        try:
            while data := source.recv(65536):
                if from_client and data.startswith(b"PUT "):
                    in_put, forwarded = True, 0
                if in_put:
                    forwarded += len(data)
                    if forwarded > self.after:
                        self.stalled.set()
                        return  # the rest of the body never leaves: the upload hangs half sent
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


ONE_WRITE = """
import os, sys, polars as pl
from resources.warehouse import Warehouse
rows = int(sys.argv[1])
noise = [os.urandom(8).hex() for _ in range(rows)]  # incompressible: the PUT body is megabytes
Warehouse().write(pl.DataFrame({"version": [2] * rows, "noise": noise}), ["big"])
"""


def test_a_writer_killed_in_the_middle_of_its_put_leaves_the_previous_object(s3_root, s3_endpoint, bucket):
    """Deterministic: the writer is SIGKILLed once half its PUT body has reached the server."""
    warehouse = Warehouse()
    previous = pl.DataFrame({"version": [1] * 10, "noise": ["x"] * 10})
    warehouse.write(previous, ["big"])
    proxy = StallingProxy(s3_endpoint, after=2_000_000)
    env = {
        **os.environ,
        **s3_env(proxy.url),
        "WAREHOUSE_DIR": s3_root,
        "PYTHONPATH": str(ROOT),
    }
    writer = subprocess.Popen([sys.executable, "-c", ONE_WRITE, "300000"], env=env, cwd=ROOT)
    try:
        assert proxy.stalled.wait(timeout=120), "the writer's PUT never reached the proxy"
        assert warehouse.read(["big"]).equals(previous)  # a reader meanwhile: the previous object
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        proxy.close()  # the server sees the half request end
    time.sleep(0.2)
    assert warehouse.read(["big"]).equals(previous)
    assert not bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # one PUT, not a multipart


# ---------------------------------------------------------------- configuration


def test_a_file_lock_on_object_storage_is_a_configuration_error(s3_root):
    with pytest.raises(ConfigError, match="PUSH_LOCK_URL"):
        batch_lock_for(Warehouse().local_root(), environ={})
    lock = batch_lock_for(Warehouse().local_root(), environ={"PUSH_LOCK_URL": "postgresql://x@127.0.0.1/db"})
    assert callable(lock)


@pytest.mark.parametrize("location", ["gs://bucket/prefix", "nosuchstore://bucket/prefix"])
def test_a_store_without_its_backend_is_a_configuration_error(location):
    """gcsfs is not installed (as s3fs would not be without the k8s group): a clear error, not a crash
    deep inside the first write."""
    with pytest.raises(ConfigError, match="no fsspec backend"):
        wh.warehouse_root(location)


# ---------------------------------------------------------------- the pricing assets on S3


def pricing_on_s3(s3_root: str, sandbox, config: dict) -> tuple[Definitions, DagsterInstance]:
    """The pricing definitions over 4 batches on the S3 warehouse and the sandbox, catalog loaded."""
    from tests.pricing.wiring import pricing_with_catalog

    return pricing_with_catalog(s3_root, batches=4, config=config, storefront_url=f"{sandbox.url}/storefront")


def test_pricing_assets_materialize_into_the_bucket(s3_root, bucket, sandbox):
    """catalog, the CDN file supplier's cache, then one batch of offers (alpha and delta's cached
    file), best_offers and storefront_prices: all on S3."""
    defs, instance = pricing_on_s3(
        s3_root, sandbox, {"suppliers": {"beta": {"enabled": False}, "gamma": {"enabled": False}}}
    )
    files = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        asset_selection=[
            AssetKey(["supplier_files", "delta"]),
            AssetKey(["supplier_files_quarantine", "delta"]),
        ],
    )
    assert files.success
    result = defs.resolve_job_def("price_sweep_job").execute_in_process(
        instance=instance, partition_key="batch-000"
    )
    assert result.success

    stored = keys_under(bucket, s3_root)
    for key in (
        "catalog.parquet",
        "supplier_files/delta.parquet",
        "supplier_files_quarantine/delta.parquet",
        "_cdn_state/delta.json",
        "supplier_offers/alpha/batch-000.parquet",
        "supplier_offers/delta/batch-000.parquet",
        "best_offers/batch-000.parquet",
        "storefront_prices/batch-000.parquet",
    ):
        assert key in stored, sorted(stored)
    warehouse = Warehouse()
    catalog_rows = warehouse.read(["catalog"]).filter(pl.col("active") & (pl.col("batch") == "batch-000"))
    assert warehouse.read(["supplier_offers", "alpha"], "batch-000").height > 0
    assert warehouse.read(["supplier_offers", "delta"], "batch-000").height > 0
    prices = warehouse.read(["storefront_prices"], "batch-000")
    assert prices.height > 0
    assert set(prices.get_column("sku")) <= set(catalog_rows.get_column("sku"))


@pytest.mark.postgres
def test_push_journal_ledger_and_reconcile_marks_on_s3(s3_root, bucket, sandbox, pg_url, monkeypatch):
    """The push needs a lock every pusher shares: without PUSH_LOCK_URL it fails naming it; with it,
    the journal, the ledger and the reconcile marks all live in the bucket."""
    for name in ("PUSH_LOCK_URL", "DAGSTER_PG_URL"):
        monkeypatch.delenv(name, raising=False)
    config = {
        "suppliers": {"beta": {"enabled": False}, "gamma": {"enabled": False}, "delta": {"enabled": False}}
    }
    defs, instance = pricing_on_s3(s3_root, sandbox, config)
    cycle = defs.resolve_job_def("price_cycle_job")
    refused = cycle.execute_in_process(instance=instance, partition_key="batch-000", raise_on_error=False)
    assert not refused.success
    failures = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures and "PUSH_LOCK_URL" in str(failures[0].step_failure_data.error)
    assert sandbox.pushes()["pushes"] == []

    monkeypatch.setenv("PUSH_LOCK_URL", pg_url)
    assert cycle.execute_in_process(instance=instance, partition_key="batch-000").success
    stored = keys_under(bucket, s3_root)
    for key in ("storefront_sync/batch-000.parquet", "_journal/storefront_sync/batch-000.parquet"):
        assert key in stored, sorted(stored)
    ledger = Warehouse().read(["storefront_sync"], "batch-000")
    pushed = sandbox.pushes()["pushes"]
    assert ledger.height == sum(len(p["prices"]) for p in pushed if p["batch"] == "batch-000") > 0

    # Reconcile reads the ledger from S3, finds the wiped storefront's drift and repairs it.
    httpx.post(f"{sandbox.url}/_control/storefront_wipe", timeout=10).raise_for_status()
    reconcile = defs.resolve_job_def(RECONCILE_JOB_NAME).execute_in_process(
        instance=instance, partition_key="batch-000", run_config=RECONCILE_RUN_CONFIG
    )
    assert reconcile.success
    live = httpx.get(f"{sandbox.url}/storefront/_pushes", timeout=10).json()["prices"]
    assert set(live) == set(ledger.get_column("sku"))
    # Marks are only written while a repair is pending (here it succeeded at once): their store, directly.
    marks = MarkStore(Warehouse())
    open_marks = empty_marks().vstack(
        pl.DataFrame([dict.fromkeys(MARK_SCHEMA)], schema=MARK_SCHEMA).with_columns(sku=pl.lit("SKU-1"))
    )
    marks.save("batch-001", open_marks)
    assert marks.load("batch-001").equals(open_marks)
    assert "_reconcile/storefront_sync/batch-001.parquet" in keys_under(bucket, s3_root)
