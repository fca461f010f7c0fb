"""The warehouse IO manager: path contract, partition column, atomic writes."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from dagster import (
    AssetIn,
    BackfillPolicy,
    DailyPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from upath import UPath

from resources import warehouse as wh
from resources.config import ConfigError
from resources.warehouse import Warehouse, WarehouseIOManager, table_path

ROOT = Path(__file__).resolve().parent.parent
batches = StaticPartitionsDefinition(["batch-000", "batch-001", "batch-002"])
days = DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")


def money_frame(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {"sku": [f"S{i}" for i in range(n)], "price": [Decimal("1.10") * (i + 1) for i in range(n)]},
        schema={"sku": pl.String, "price": pl.Decimal(20, 4)},
    )


def test_unpartitioned_round_trip_at_contract_path(tmp_path):
    @asset
    def catalog() -> pl.DataFrame:
        return money_frame()

    @asset
    def downstream(catalog: pl.DataFrame) -> pl.DataFrame:
        return catalog.with_columns(pl.col("price") * 2)

    result = materialize(
        [catalog, downstream], resources={"io_manager": WarehouseIOManager(base_dir=str(tmp_path))}
    )
    assert result.success
    stored = pl.read_parquet(tmp_path / "catalog.parquet")
    assert stored.equals(money_frame())
    assert stored.schema["price"] == pl.Decimal(20, 4)
    assert pl.read_parquet(tmp_path / "downstream.parquet").get_column("price").to_list()[0] == Decimal("2.2")


def test_nested_key_path(tmp_path):
    @asset(key=["supplier_offers", "alpha"], partitions_def=batches)
    def offers() -> pl.DataFrame:
        return money_frame()

    materialize(
        [offers],
        partition_key="batch-001",
        resources={"io_manager": WarehouseIOManager(base_dir=str(tmp_path))},
    )
    stored = pl.read_parquet(tmp_path / "supplier_offers" / "alpha" / "batch-001.parquet")
    assert stored.get_column("batch").unique().to_list() == ["batch-001"]


def test_daily_partition_column_is_day_and_folder_scan_works(tmp_path):
    @asset(partitions_def=days)
    def sales_report(context) -> pl.DataFrame:
        return money_frame(2)

    io = WarehouseIOManager(base_dir=str(tmp_path))
    for day in ("2026-11-01", "2026-11-02"):
        assert materialize([sales_report], partition_key=day, resources={"io_manager": io}).success
    scanned = pl.scan_parquet(str(tmp_path / "sales_report" / "*.parquet")).collect()
    assert sorted(scanned.get_column("day").unique().to_list()) == ["2026-11-01", "2026-11-02"]
    assert scanned.height == 4


def test_multi_partition_output_is_split_per_partition(tmp_path):
    @asset(partitions_def=batches, backfill_policy=BackfillPolicy.single_run())
    def best_offers(context) -> pl.DataFrame:
        keys = list(context.partition_keys)
        # batch-002 gets no rows: its file must still be (re)written, empty.
        return pl.DataFrame({"sku": ["a", "b", "c"], "batch": [keys[0], keys[0], keys[1]]})

    @asset(
        partitions_def=batches,
        ins={"best_offers": AssetIn("best_offers")},
        backfill_policy=BackfillPolicy.single_run(),
    )
    def prices(context, best_offers: pl.DataFrame) -> pl.DataFrame:
        return best_offers

    io = WarehouseIOManager(base_dir=str(tmp_path))
    result = materialize(
        [best_offers, prices],
        tags={
            "dagster/asset_partition_range_start": "batch-000",
            "dagster/asset_partition_range_end": "batch-002",
        },
        resources={"io_manager": io},
    )
    assert result.success
    heights = {
        key: pl.read_parquet(tmp_path / "best_offers" / f"{key}.parquet").height
        for key in batches.get_partition_keys()
    }
    assert heights == {"batch-000": 2, "batch-001": 1, "batch-002": 0}
    assert pl.read_parquet(tmp_path / "prices" / "batch-000.parquet").height == 2


@pytest.mark.parametrize("foreign", ["batch-002", None])
def test_rows_for_foreign_partition_are_refused(tmp_path, foreign: str | None):
    # A row without a partition key is refused too, never dropped silently.
    @asset(partitions_def=batches)
    def bad() -> pl.DataFrame:
        return pl.DataFrame(
            {"sku": ["a", "b"], "batch": ["batch-000", foreign]}, schema_overrides={"batch": pl.String}
        )

    result = materialize(
        [bad],
        partition_key="batch-000",
        resources={"io_manager": WarehouseIOManager(base_dir=str(tmp_path))},
        raise_on_error=False,
    )
    assert not result.success
    assert not (tmp_path / "bad" / "batch-000.parquet").exists()


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = UPath(tmp_path) / "catalog.parquet"
    wh.write_parquet_atomic(money_frame(3), path)

    def explode(*args, **kwargs):
        raise OSError("disk full halfway")

    # Fail after the temp file was opened and partly written: the rename must never happen.
    real_fsync = wh.os.fsync
    monkeypatch.setattr(wh.os, "fsync", explode)
    with pytest.raises(OSError, match="disk full"):
        wh.write_parquet_atomic(money_frame(10), path)
    monkeypatch.setattr(wh.os, "fsync", real_fsync)
    assert pl.read_parquet(str(path)).equals(money_frame(3))
    assert [p.name for p in Path(tmp_path).iterdir()] == ["catalog.parquet"]  # no temp file left


def test_killed_writer_leaves_no_half_file(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "t.parquet"
    wh.write_parquet_atomic(money_frame(3), UPath(path))
    script = (
        "import os, polars as pl; from upath import UPath; import resources.warehouse as wh\n"
        "orig = wh.os.replace\n"
        "wh.os.replace = lambda *a: os._exit(9)\n"  # the process dies right before publishing
        f"wh.write_parquet_atomic(pl.DataFrame({{'x': list(range(1000))}}), UPath({str(path)!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent, check=False)
    assert proc.returncode == 9
    assert pl.read_parquet(path).equals(money_frame(3))


def test_table_path_rejects_escape():
    with pytest.raises(ValueError, match="unsafe path segment"):
        table_path(UPath("/w"), ["a"], "../etc")
    assert str(table_path(UPath("/w"), ["supplier_offers", "alpha"], "batch-000")).endswith(
        "/w/supplier_offers/alpha/batch-000.parquet"
    )


def test_warehouse_resource_sidecar_and_partitions(tmp_path):
    w = Warehouse(base_dir=str(tmp_path))
    assert w.read_json(["supplier_files", "delta"], "state") is None
    w.write_json({"etag": "abc"}, ["supplier_files", "delta"], "state")
    assert w.read_json(["supplier_files", "delta"], "state") == {"etag": "abc"}
    assert w.read_partitions(["x"], ["batch-000"]) is None
    w.write(money_frame(2).with_columns(pl.lit("batch-000").alias("batch")), ["x"], "batch-000")
    w.write(money_frame(1).with_columns(pl.lit("batch-001").alias("batch")), ["x"], "batch-001")
    assert w.read_partitions(["x"]).height == 3
    assert w.read_partitions(["x"], ["batch-001", "batch-002"]).height == 1


def _read_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every Parquet file the warehouse module reads from disk."""
    reads: list[str] = []
    original = wh.read_parquet

    def counting(path: UPath) -> pl.DataFrame:
        reads.append(Path(str(path)).name)
        return original(path)

    monkeypatch.setattr(wh, "read_parquet", counting)
    return reads


def _ranged_pipeline(tmp_path: Path, mutate_between: bool = False, raise_on_error: bool = True):
    """best_offers (ranged, 3 partitions) -> prices, in one in-process run."""

    @asset(partitions_def=batches, backfill_policy=BackfillPolicy.single_run())
    def best_offers(context) -> pl.DataFrame:
        keys = list(context.partition_keys)
        # Rows deliberately not grouped by batch: the input must still come back in partition order.
        frame = pl.DataFrame({"sku": ["c", "a", "b"], "batch": [keys[1], keys[0], keys[0]]})
        return frame.with_columns(price=pl.lit(Decimal("1.5"), dtype=pl.Decimal(20, 4)))

    @asset(
        partitions_def=batches,
        ins={"best_offers": AssetIn("best_offers")},
        backfill_policy=BackfillPolicy.single_run(),
    )
    def prices(context, best_offers: pl.DataFrame) -> pl.DataFrame:
        if mutate_between:
            # Another writer replaces one partition between the two steps.
            wh.write_parquet_atomic(
                best_offers.head(0), UPath(tmp_path / "best_offers" / "batch-000.parquet")
            )
        return best_offers

    tags = {
        "dagster/asset_partition_range_start": "batch-000",
        "dagster/asset_partition_range_end": "batch-002",
    }
    io = WarehouseIOManager(base_dir=str(tmp_path))
    return materialize(
        [best_offers, prices], tags=tags, resources={"io_manager": io}, raise_on_error=raise_on_error
    )


def test_downstream_step_of_the_same_process_reuses_what_was_just_written(tmp_path, monkeypatch):
    reads = _read_counter(monkeypatch)
    assert _ranged_pipeline(tmp_path).success
    assert reads == []  # prices got best_offers from memory, not from the three files
    from_disk = pl.concat(
        [pl.read_parquet(tmp_path / "best_offers" / f"batch-00{i}.parquet") for i in range(3)]
    )
    assert pl.read_parquet(tmp_path / "prices" / "batch-000.parquet").equals(
        from_disk.filter(pl.col("batch") == "batch-000")
    )
    # What memory served equals what the files hold, in partition order.
    io = WarehouseIOManager(base_dir=str(tmp_path))
    served = wh._RECENT_OUTPUTS.get(
        [table_path(io._root_path(), ["best_offers"], f"batch-00{i}") for i in range(3)]
    )
    assert served is not None and served.equals(from_disk)
    assert served.get_column("sku").to_list() == ["a", "b", "c"]


def test_a_file_replaced_after_the_write_is_read_from_disk(tmp_path, monkeypatch):
    reads = _read_counter(monkeypatch)
    assert _ranged_pipeline(tmp_path, mutate_between=True).success
    # The first load (before the replacement) hit memory; the next reader sees the new file.
    assert reads == []
    io = WarehouseIOManager(base_dir=str(tmp_path))
    paths = [table_path(io._root_path(), ["best_offers"], f"batch-00{i}") for i in range(3)]
    assert wh._RECENT_OUTPUTS.get(paths) is None


def test_recent_outputs_keep_only_the_latest(tmp_path):
    recent = wh._RecentOutputs(capacity=2)
    frames = {}
    for name in ("a", "b", "c"):
        path = UPath(tmp_path / f"{name}.parquet")
        frames[name] = money_frame(len(name) + 1)
        wh.write_parquet_atomic(frames[name], path)
        recent.put([path], frames[name])
    assert recent.get([UPath(tmp_path / "a.parquet")]) is None
    assert recent.get([UPath(tmp_path / "c.parquet")]) is frames["c"]
    assert recent.get([UPath(tmp_path / "missing.parquet")]) is None


# ---------------------------------------------------------------- no litter (issue 13)

# A writer that is in the middle of writing best_offers/<batch>.parquet when the test kills it.
HALF_WRITER = """
import sys, time
from pathlib import Path
from resources.warehouse import _publish_atomic

def write(handle):
    handle.write(b"PAR1" + b"x" * 100_000)  # half a Parquet file
    handle.flush()
    print("writing", flush=True)
    time.sleep(300)

_publish_atomic(Path(sys.argv[1]), write)
"""


def start_half_writer(target: Path) -> subprocess.Popen[str]:
    """A process stuck mid-write of `target` (it has created and locked its temp file)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HALF_WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "writing"
    return process


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_writers_temp_file_is_invisible_then_removed_by_the_next_write(tmp_path):
    warehouse = Warehouse(base_dir=str(tmp_path))
    good = money_frame(3).with_columns(pl.lit("batch-000").alias("batch"))
    warehouse.write(good, ["best_offers"], "batch-000")
    folder = tmp_path / "best_offers"
    writer = start_half_writer(folder / "batch-000.parquet")
    writer.kill()  # kill -9: no cleanup handler runs
    writer.wait(timeout=10)
    litter = temp_files(folder)
    assert len(litter) == 1 and litter[0].startswith(".batch-000.parquet.")

    # Readers never see it: the analysts' globs, DuckDB, read_partitions.
    assert [p.name for p in folder.glob("*.parquet")] == ["batch-000.parquet"]
    assert pl.scan_parquet(str(folder / "*.parquet")).collect().equals(good)
    assert warehouse.read_partitions(["best_offers"]).equals(good)
    with duckdb.connect() as db:
        assert db.execute(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall() == [(3,)]

    # The next write of the same key removes it.
    warehouse.write(good.head(2), ["best_offers"], "batch-000")
    assert temp_files(folder) == []
    assert warehouse.read(["best_offers"], "batch-000").height == 2


def test_maintenance_removes_orphans_everywhere_but_never_a_live_writers_file(tmp_path):
    warehouse = Warehouse(base_dir=str(tmp_path))
    dead = start_half_writer(tmp_path / "storefront_prices" / "batch-003.parquet")
    dead.kill()
    dead.wait(timeout=10)
    also_dead = start_half_writer(tmp_path / "catalog.parquet")
    also_dead.kill()
    also_dead.wait(timeout=10)
    live = start_half_writer(tmp_path / "storefront_prices" / "batch-004.parquet")
    try:
        # The live writer's temp file survives both the maintenance sweep and a write beside it.
        warehouse.write(money_frame(), ["storefront_prices"], "batch-005")
        removed = warehouse.remove_orphan_temp_files()
        assert sorted(p.name.split(".parquet")[0] for p in removed) == [".batch-003", ".catalog"]
        remaining = temp_files(tmp_path / "storefront_prices")
        assert len(remaining) == 1 and remaining[0].startswith(".batch-004.parquet.")
        assert temp_files(tmp_path) == []
    finally:
        live.kill()
        live.wait(timeout=10)
    assert [p.name for p in warehouse.remove_orphan_temp_files()] == remaining
    assert temp_files(tmp_path / "storefront_prices") == []


def test_a_failed_write_leaves_no_temp_file(tmp_path):
    def explode(handle) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        wh._publish_atomic(tmp_path / "t.parquet", explode)
    assert list(tmp_path.iterdir()) == []


def test_tables_are_written_as_zstd_level_1_with_statistics(tmp_path):
    """The writer's codec, level and statistics: the same bytes polars writes with them, not level 3's."""
    import io

    import pyarrow.parquet as pq

    frame = pl.DataFrame(
        {"sku": [f"SKU-{i % 5000:06d}" for i in range(50_000)], "stock": list(range(50_000))}
    )
    path = UPath(tmp_path / "t.parquet")
    wh.write_parquet_atomic(frame, path)
    written = path.read_bytes()

    def polars_bytes(level: int) -> bytes:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", compression_level=level, statistics=True)
        return buffer.getvalue()

    assert written == polars_bytes(1)
    assert written != polars_bytes(3)
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert column.statistics is not None and column.statistics.has_min_max


# ---------------------------------------------------------------- partition files a few at a time (issue 17)


def _meeting(monkeypatch: pytest.MonkeyPatch, name: str, parties: int) -> list[str]:
    """Make wh.<name> wait until `parties` calls are inside it at once (fails if they run one by one)."""
    monkeypatch.delenv(wh.IO_THREADS_ENV, raising=False)  # the default, whatever the shell exports
    barrier = threading.Barrier(parties, timeout=10)
    threads: list[str] = []
    original = getattr(wh, name)

    def meeting(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        barrier.wait()  # BrokenBarrierError after 10 s when the calls come one after another
        return original(*args, **kwargs)

    monkeypatch.setattr(wh, name, meeting)
    return threads


def test_a_ranged_output_writes_its_partition_files_at_the_same_time(tmp_path, monkeypatch):
    threads = _meeting(monkeypatch, "write_parquet_atomic", parties=3)
    assert _ranged_pipeline(tmp_path).success
    assert len(threads) == 6  # both assets, three files each, every write inside the barrier
    assert all(name.startswith("warehouse-io") for name in threads)
    stored = [pl.read_parquet(tmp_path / "best_offers" / f"batch-00{i}.parquet") for i in range(3)]
    assert [frame.get_column("sku").to_list() for frame in stored] == [["a", "b"], ["c"], []]


def test_read_partitions_reads_files_at_the_same_time_and_keeps_their_order(tmp_path, monkeypatch):
    warehouse = Warehouse(base_dir=str(tmp_path))
    for i in range(3):
        warehouse.write(money_frame(i + 1), ["t"], f"batch-00{i}")
    original = wh.read_parquet
    threads = _meeting(monkeypatch, "read_parquet", parties=4)
    meeting = wh.read_parquet

    def first_file_last(path: UPath) -> pl.DataFrame:
        frame = meeting(path)
        if Path(str(path)).name == "batch-000.parquet":
            time.sleep(0.3)  # the first partition's read ends last
        return frame

    monkeypatch.setattr(wh, "read_parquet", first_file_last)
    frame = warehouse.read_partitions(["t"], ["batch-000", "batch-001", "batch-002", "batch-009"])
    assert len(threads) == 4 and all(name.startswith("warehouse-io") for name in threads)
    # Partition order, whatever order the reads finished in; the unwritten batch-009 is skipped.
    monkeypatch.setattr(wh, "read_parquet", original)
    assert frame is not None
    assert frame.equals(pl.concat([money_frame(1), money_frame(2), money_frame(3)]))


def test_one_file_at_a_time_when_configured(tmp_path, monkeypatch):
    monkeypatch.setenv(wh.IO_THREADS_ENV, "1")
    inside, most = [0], [0]
    original = wh.write_parquet_atomic

    def counted(*args: Any, **kwargs: Any) -> None:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.05)
            original(*args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(wh, "write_parquet_atomic", counted)
    assert _ranged_pipeline(tmp_path).success
    assert most == [1]


@pytest.mark.parametrize("value", ["0", "-2", "four", "1.5", "²"])
def test_a_bad_io_thread_count_is_a_configuration_error_naming_it(monkeypatch, value):
    monkeypatch.setenv(wh.IO_THREADS_ENV, value)
    with pytest.raises(ConfigError, match=rf"WAREHOUSE_IO_THREADS='{re.escape(value)}'.*1 or more"):
        wh.io_threads()


def test_a_partition_write_failing_fails_the_output_and_keeps_that_files_previous_rows(tmp_path, monkeypatch):
    previous = pl.DataFrame({"sku": ["old"], "batch": ["batch-001"]}).with_columns(
        price=pl.lit(Decimal("9"), dtype=pl.Decimal(20, 4))
    )
    Warehouse(base_dir=str(tmp_path)).write(previous, ["best_offers"], "batch-001")
    original = wh.write_parquet_atomic

    def failing(frame: pl.DataFrame, path: UPath, **kwargs: Any) -> None:
        if Path(str(path)).name == "batch-001.parquet":
            raise OSError("disk full writing batch-001")
        original(frame, path, **kwargs)

    monkeypatch.setattr(wh, "write_parquet_atomic", failing)
    result = _ranged_pipeline(tmp_path, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "disk full writing batch-001" in str(failure.step_failure_data.error)
    assert pl.read_parquet(tmp_path / "best_offers" / "batch-001.parquet").equals(previous)
    # Nothing of the failed output is served from memory to a later step.
    paths = [table_path(UPath(tmp_path), ["best_offers"], f"batch-00{i}") for i in range(3)]
    assert wh._RECENT_OUTPUTS.get(paths) is None
    assert not (tmp_path / "prices").exists()
