"""The orders assets materialized through Dagster against a generated SQLite orders database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, build_sensor_context, materialize

from orders_assets import allocation, defs, schemas, validation
from orders_assets.assets import ORDERS_ASSETS
from orders_assets.schedules import RANGE_END_TAG, RANGE_START_TAG, hourly_request, range_run_request
from orders_assets.sensors import orders_late_changes
from resources.orders_db import OrdersDatabase
from resources.warehouse import Warehouse
from sandbox.orders_db import orders_metadata
from tests.orders.conftest import DAYS, OrdersEnv, run_days

TABLES = ["orders", "order_rejects", "order_allocations", "sales_report"]
DAY1, DAY2 = (d.isoformat() for d in DAYS)


def tables(env: OrdersEnv, day: str) -> dict[str, pl.DataFrame]:
    return {name: env.read(name, day) for name in TABLES}


def test_a_run_over_two_days_accounts_for_every_row_and_passes_its_checks(orders_env: OrdersEnv) -> None:
    result = run_days(orders_env, DAY1, DAY2)
    for day in (DAY1, DAY2):
        injected = orders_env.injected["per_day"][day]
        rejects = orders_env.read("order_rejects", day)
        counts = validation.reject_counts(rejects)
        for kind in ("unknown_sku", "non_positive_quantity", "negative_price", "currency_mismatch"):
            assert counts[kind] == injected[kind] >= 1, kind
        for kind in ("line_without_order", "duplicate_line", "order_without_lines"):
            assert counts[kind] == injected[kind] >= 1, kind
        orders = orders_env.read("orders", day)
        assert orders.height == injected["clean_lines"]
        assert orders.get_column("day").unique().to_list() == [day]
        allocations = orders_env.read("order_allocations", day)
        assert allocations.height == orders.height
        assert set(allocations.get_column("allocation").unique()) == {"allocated", "backordered", "cancelled"}
    verdicts = {
        (e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()
    }
    assert verdicts == {
        ("orders", "ingested_balance"): True,
        # The generated database has orders without lines, as the seed's balance query looks for.
        ("orders", "no_order_without_lines"): False,
        ("order_allocations", "no_oversell"): True,
        ("order_allocations", "allocations_match_orders"): True,
    }
    # One run over two days: each day's materializations carry that day's own numbers.
    events = [*result.asset_materializations_for_node("ingest_orders")]
    events += result.asset_materializations_for_node("order_allocations")
    events += result.asset_materializations_for_node("sales_report")
    meta = {(m.asset_key.to_user_string(), m.partition): m.metadata for m in events}
    lines = []
    for day in (DAY1, DAY2):
        injected = orders_env.injected["per_day"][day]
        assert meta[("orders", day)]["lines"].value == injected["clean_lines"]
        assert meta[("orders", day)]["rows"].value == orders_env.read("orders", day).height
        rejects = orders_env.read("order_rejects", day)
        assert meta[("order_rejects", day)]["rejected"].value == rejects.height
        assert meta[("order_rejects", day)]["reason_unknown_sku"].value == injected["unknown_sku"]
        allocations = orders_env.read("order_allocations", day)
        assert meta[("order_allocations", day)]["lines"].value == allocations.height
        assert meta[("order_allocations", day)]["price_history_read"].value == day
        report = orders_env.read("sales_report", day)
        assert meta[("sales_report", day)]["units"].value == report.get_column("units").sum()
        lines.append(meta[("orders", day)]["lines"].value)
    assert lines[0] != lines[1]


def test_no_payment_data_in_any_parquet_file_or_run_log(orders_env: OrdersEnv) -> None:
    """Card numbers, CVCs and billing addresses (fake but realistic) never reach the warehouse or logs.

    (The test's name avoids the column names: pytest puts it in the tmp path, which the logs show.)
    """
    engine = sa.create_engine(orders_env.url)
    _, orders_t, _ = orders_metadata()
    with engine.connect() as conn:
        secrets = conn.execute(
            sa.select(orders_t.c.id, orders_t.c.card_number, orders_t.c.card_cvc, orders_t.c.billing_address)
        ).all()
    engine.dispose()
    cards = {row.card_number for row in secrets if row.card_number}
    addresses = {row.billing_address for row in secrets}
    cvcs = pl.DataFrame(
        [(row.id, row.card_cvc) for row in secrets if row.card_cvc],
        schema={"order_id": pl.Int64, "_cvc": pl.String},
        orient="row",
    )
    assert len(cards) > 100 and len(addresses) > 100 and cvcs.height > 100

    instance = DagsterInstance.ephemeral()
    result = run_days(orders_env, DAY1, DAY2, instance=instance)
    summary = materialize(
        ORDERS_ASSETS, resources=orders_env.resources(), selection=["sales_summary"], instance=instance
    )
    assert summary.success

    files = sorted(orders_env.warehouse.rglob("*.parquet"))
    assert len(files) >= 9
    forbidden_names = ("card_number", "card_cvc", "billing_address", "cvc", "card", "address")
    for path in files:
        frame = pl.read_parquet(path)
        assert not [c for c in frame.columns if any(name in c for name in forbidden_names)], path
        text = frame.select(pl.all().cast(pl.String)).write_csv()
        assert not [card for card in cards if card in text], path
        assert not [address for address in addresses if address in text], path
        if "order_id" in frame.columns:
            # No column carries the order's CVC (3-4 digits also occur by chance, e.g. as a rank: a
            # leaked column would match on most rows, chance on about one in a thousand).
            with_cvc = frame.join(cvcs, on="order_id", how="inner")
            for column in frame.columns:
                hits = with_cvc.filter(pl.col(column).cast(pl.String) == pl.col("_cvc")).height
                assert hits <= max(3, with_cvc.height // 100), (path, column, hits)
    for run_id in (result.run_id, summary.run_id):
        logs = "\n".join(repr(event) for event in instance.all_logs(run_id))
        assert len(logs) > 1000
        assert not [card for card in cards if card in logs]
        assert not [address for address in addresses if address in logs]
        assert not [name for name in forbidden_names[:3] if name in logs]


def test_a_late_status_change_shows_on_rerun_and_nothing_else_moves(orders_env: OrdersEnv) -> None:
    run_days(orders_env, DAY1)
    before = tables(orders_env, DAY1)
    allocated = before["order_allocations"].filter(
        (pl.col("allocation") == "allocated") & (pl.col("status") == "paid")
    )
    order_id = allocated.get_column("order_id")[0]
    late = datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    engine = sa.create_engine(orders_env.url)
    _, orders_t, _ = orders_metadata()
    with engine.begin() as conn:
        conn.execute(
            sa.update(orders_t).where(orders_t.c.id == order_id).values(status="refunded", updated_at=late)
        )
    engine.dispose()

    run_days(orders_env, DAY1)
    after = tables(orders_env, DAY1)
    changed = pl.col("order_id") == order_id
    # The change is there ...
    row = after["orders"].filter(changed)
    assert set(row.get_column("status")) == {"refunded"}
    assert set(row.get_column("updated_at")) == {late}
    # ... and every other row is identical, in every table.
    for name in ("orders", "order_allocations"):
        assert after[name].filter(~changed).equals(before[name].filter(~changed)), name
        assert (
            after[name]
            .filter(changed)
            .drop("status", "updated_at", strict=False)
            .equals(before[name].filter(changed).drop("status", "updated_at", strict=False))
        ), name
    assert after["order_rejects"].equals(before["order_rejects"])
    # The refunded lines leave the report; nothing else in it changes.
    lines = before["order_allocations"].filter(changed & (pl.col("allocation") == "allocated"))
    touched = lines.select("sku", "supplier").unique()
    report_before, report_after = before["sales_report"], after["sales_report"]
    untouched_before = report_before.join(touched, on=["sku", "supplier"], how="anti")
    untouched_after = report_after.join(touched, on=["sku", "supplier"], how="anti")
    assert untouched_after.equals(untouched_before)
    revenue_drop = sum(q * p for q, p in lines.select("quantity", "unit_price").iter_rows())
    assert (
        report_before.get_column("revenue").sum() - report_after.get_column("revenue").sum() == revenue_drop
    )


def test_one_run_over_two_days_equals_two_runs_in_order_and_reruns_are_identical(
    orders_env: OrdersEnv, tmp_path: Path
) -> None:
    run_days(orders_env, DAY1, DAY2)
    together = {day: tables(orders_env, day) for day in (DAY1, DAY2)}
    run_days(orders_env, DAY1)
    run_days(orders_env, DAY2)
    apart = {day: tables(orders_env, day) for day in (DAY1, DAY2)}
    for day in (DAY1, DAY2):
        for name in TABLES:
            assert apart[day][name].equals(together[day][name]), (day, name)
    # Day 2 drew on alpha snapshots that began on day 1: those units were counted (not re-sold).
    consumed = allocation.consumed_units(together[DAY1]["order_allocations"])
    assert consumed.height > 0


def test_an_overdrawn_snapshot_blocks_the_sales_report(orders_env: OrdersEnv) -> None:
    # An earlier day's stored allocations claim more units than the snapshot (valid since the day
    # before) ever had: the blocking no_oversell check must stop the report.
    snapshots = allocation.normalize_snapshots(
        Warehouse(base_dir=str(orders_env.warehouse)).read_partitions(["price_history"])
    )
    alpha = snapshots.filter((pl.col("supplier") == "alpha") & pl.col("stock").is_not_null()).row(
        0, named=True
    )
    fake = pl.DataFrame(
        [
            {
                "day": "2026-02-28",
                "fcfs_rank": 1,
                "order_id": 1,
                "customer_id": "x",
                "status": "paid",
                "created_at": alpha["valid_from"],
                "sku": alpha["sku"],
                "quantity": alpha["stock"] + 5,
                "unit_price": alpha["cost"],
                "allocation": "allocated",
                "supplier": "alpha",
                "unit_cost": alpha["cost"],
                "snapshot_valid_from": alpha["valid_from"],
                "snapshot_stock": alpha["stock"],
            }
        ],
        schema=schemas.ORDER_ALLOCATIONS_SCHEMA,
    )
    Warehouse(base_dir=str(orders_env.warehouse)).write(fake, ["order_allocations"], "2026-02-28")
    result = materialize(
        ORDERS_ASSETS,
        resources=orders_env.resources(),
        partition_key=DAY1,
        selection=TABLES,
        raise_on_error=False,
    )
    verdicts = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts["no_oversell"] is False
    assert (orders_env.warehouse / "order_allocations" / f"{DAY1}.parquet").exists()
    assert not (orders_env.warehouse / "sales_report" / f"{DAY1}.parquet").exists()


def test_the_location_job_runs_a_day_range_with_the_real_definitions(
    orders_env: OrdersEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_DB_URL", orders_env.url)
    monkeypatch.setenv("WAREHOUSE_DIR", str(orders_env.warehouse))
    job = defs.resolve_job_def("orders_job")
    result = job.execute_in_process(
        instance=DagsterInstance.ephemeral(), tags={RANGE_START_TAG: DAY1, RANGE_END_TAG: DAY2}
    )
    assert result.success
    for day in (DAY1, DAY2):
        for name in TABLES:
            assert (orders_env.warehouse / name / f"{day}.parquet").exists()
    summary = pl.read_parquet(orders_env.warehouse / "sales_summary.parquet")
    assert summary.get_column("day").to_list() == [DAY1, DAY2]
    report = pl.concat([orders_env.read("sales_report", d) for d in (DAY1, DAY2)])
    assert summary.get_column("revenue").sum() == report.get_column("revenue").sum()


def test_hourly_schedule_asks_for_yesterday_and_today_in_one_run() -> None:
    request = hourly_request(datetime(2026, 3, 2, 7, 15, tzinfo=UTC))
    assert request.tags[RANGE_START_TAG] == "2026-03-01"
    assert request.tags[RANGE_END_TAG] == "2026-03-02"
    assert request.run_key == "orders-2026-03-02T07:15"
    # Never before the first partition.
    early = range_run_request(datetime(2025, 12, 30).date(), datetime(2026, 1, 1).date(), run_key=None)
    assert early.tags[RANGE_START_TAG] == "2026-01-01"
    assert defs.resolve_schedule_def("orders_hourly").cron_schedule == "15 * * * *"


def test_late_change_sensor_re_runs_from_the_changed_day_through_today(orders_env: OrdersEnv) -> None:
    db = OrdersDatabase(url=orders_env.url)
    sensor = defs.resolve_sensor_def("orders_late_changes")
    with build_sensor_context(resources={"orders_db": db}) as context:
        first = sensor(context)
    watermark = first.cursor
    assert watermark and not first.run_requests
    with build_sensor_context(resources={"orders_db": db}, cursor=watermark) as context:
        idle = orders_late_changes(context)
    assert not idle.run_requests and idle.cursor == watermark

    engine = sa.create_engine(orders_env.url)
    _, orders_t, _ = orders_metadata()
    changed_at = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as conn:
        first_id = conn.execute(sa.select(sa.func.min(orders_t.c.id))).scalar()
        conn.execute(
            sa.update(orders_t)
            .where(orders_t.c.id == first_id)
            .values(status="cancelled", updated_at=changed_at)
        )
    engine.dispose()
    with build_sensor_context(resources={"orders_db": db}, cursor=watermark) as context:
        woke = orders_late_changes(context)
    (request,) = woke.run_requests
    assert request.tags[RANGE_START_TAG] == DAY1
    assert request.tags[RANGE_END_TAG] == datetime.now(UTC).date().isoformat()
    assert woke.cursor == changed_at.isoformat()
    assert request.run_key == f"late-{DAY1}-{woke.cursor}"


def test_the_store_currency_comes_from_the_supplier_registry(
    orders_env: OrdersEnv, store_registry: Path
) -> None:
    store_registry.write_text("store_currency: USD\nsuppliers: []\n")
    result = materialize(
        ORDERS_ASSETS,
        resources=orders_env.resources(),
        partition_key=DAY1,
        selection=["orders", "order_rejects"],
    )
    assert result.success
    accepted = orders_env.read("orders", DAY1)
    # Only the orders the generator wrote in a foreign currency (USD here) are in the store currency now.
    assert set(accepted.get_column("currency")) == {"USD"}
    assert accepted.height == orders_env.injected["per_day"][DAY1]["currency_mismatch"]
    counts = validation.reject_counts(orders_env.read("order_rejects", DAY1))
    assert counts["currency_mismatch"] > orders_env.injected["per_day"][DAY1]["clean_lines"] // 2
