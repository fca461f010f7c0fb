"""The orders location's assets (docs/architecture.md §3): validation, allocation and sales on storage."""

from collections.abc import Iterator
from datetime import date
from typing import Any

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    BackfillPolicy,
    Config,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
    multi_asset,
)
from pydantic import Field

from orders_assets import allocation, checks, sales, schemas, validation
from orders_assets.partitions import ORDERS_START_DATE, daily_partitions
from resources.config import load_registry
from resources.orders_db import OrdersDatabase
from resources.partition_metadata import add_partition_metadata, table_metadata
from resources.schemas import column_schema
from resources.warehouse import WarehouseTables, split_by_partition

GROUP = "orders"
# Who answers for the location's assets (the catalog's owners field).
OWNERS = ["team:orders"]
# Read from PostgreSQL, computed with polars, stored as Parquet.
KINDS = {"polars", "parquet"}
# Assets of the pricing code location, read through the shared warehouse.
CATALOG = AssetKey("catalog")
PRICE_HISTORY = AssetKey("price_history")
# One run covers any range of days, processed in first-come-first-served order across them.
SINGLE_RUN = BackfillPolicy.single_run()


class OrdersIngestConfig(Config):
    """Run config of the ingestion."""

    store_currency: str | None = Field(
        default=None,
        description="The currency orders must be in; unset means the supplier registry's store_currency "
        "(the currency `cost` in price_history is converted to, so margins compare like with like).",
    )


class AllocationConfig(Config):
    """Run config of the allocation."""

    max_lookback_days: int = Field(
        default=31,
        ge=0,
        description="How many earlier days of allocations to count against snapshots still valid today.",
    )


class SummaryConfig(Config):
    """Run config of the summary."""

    window_days: int = Field(default=30, ge=1, description="How many of the latest report days to sum.")


def _store_currency(config: OrdersIngestConfig) -> str:
    return config.store_currency or load_registry().store_currency


def _known_skus(warehouse: WarehouseTables) -> pl.Series:
    if not warehouse.exists(CATALOG.path):
        raise FileNotFoundError(
            f"no catalog at {warehouse.path(CATALOG.path)}: materialize the pricing location's `catalog` "
            "first (orders are validated against it)"
        )
    return warehouse.read(CATALOG.path).get_column("sku")


def history_window(warehouse: WarehouseTables, days: list[str]) -> dict[str, str | None]:
    """The `price_history` partition each order day reads (None: no history on or before it).

    `price_history/<day>` holds every offer valid at some instant of that day (docs/pricing.md), so a
    day's allocation needs that partition only, however long the history grows. A day whose partition
    was never written (the schedule did not run that day) reads the latest written one before it:
    no observation was made that day, so the offers open then were the ones valid all day.
    """
    window: dict[str, str | None] = {}
    written: list[str] | None = None
    for day in days:
        if warehouse.exists(PRICE_HISTORY.path, day):
            window[day] = day
            continue
        if written is None:
            folder = warehouse.root().joinpath(*PRICE_HISTORY.path)
            written = sorted(p.stem for p in folder.glob("*.parquet")) if folder.exists() else []
        earlier = [d for d in written if d < day]
        window[day] = earlier[-1] if earlier else None
    return window


def _by_day(frame: pl.DataFrame, days: list[str]) -> dict[str, pl.DataFrame]:
    """Each day's rows of a table carrying the `day` column."""
    return split_by_partition(frame, "day", days)


@multi_asset(
    name="ingest_orders",
    outs={
        "orders": AssetOut(
            description="Accepted order lines of the day (by created_at), allow-listed columns only: no "
            "card number, CVC or billing address ever leaves the database.",
            group_name=GROUP,
            owners=OWNERS,
            kinds={*KINDS, "postgres"},
            metadata=column_schema(schemas.ORDERS_SCHEMA),
        ),
        "order_rejects": AssetOut(
            description="Rows that failed validation, one reason each (ingested = accepted + rejected).",
            group_name=GROUP,
            owners=OWNERS,
            kinds={*KINDS, "postgres"},
            metadata=column_schema(schemas.ORDER_REJECTS_SCHEMA),
        ),
    },
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[CATALOG],
    check_specs=checks.ORDERS_CHECK_SPECS,
    pool="orders_db",
)
def ingest_orders(
    context: AssetExecutionContext,
    config: OrdersIngestConfig,
    orders_db: OrdersDatabase,
    warehouse: WarehouseTables,
) -> Iterator[Output | AssetCheckResult]:
    """Read the window's orders from the database and split them into accepted lines and rejects."""
    window = context.partition_time_window
    store_currency = _store_currency(config)
    raw = orders_db.read_window(window.start, window.end)
    validated = validation.validate_orders(
        raw.orders,
        raw.lines,
        known_skus=_known_skus(warehouse),
        store_currency=store_currency,
        fallback_day=context.partition_keys[0],
    )
    days = list(context.partition_keys)
    latest_update = raw.orders.get_column("updated_at").max()
    context.log.info(
        f"{len(days)} day(s) from {orders_db.safe_url()}: {validated.ingested} rows, "
        f"{validated.accepted.height} accepted, {validated.rejects.height} rejected"
    )
    # Each day gets its own numbers (one run may cover many days).
    raw_days = _by_day(raw.orders.with_columns(schemas.day_expr().alias("day")), days)
    accepted_days = _by_day(validated.accepted, days)
    reject_days = _by_day(validated.rejects, days)
    orders_meta: dict[str, dict[str, Any]] = {}
    rejects_meta: dict[str, dict[str, Any]] = {}
    for day in days:
        accepted, rejected, raw_orders = accepted_days[day], reject_days[day], raw_days[day]
        newest = raw_orders.get_column("updated_at").max()
        orders_meta[day] = {
            **table_metadata(warehouse, ["orders"], day, accepted.height),
            "orders": MetadataValue.int(raw_orders.height),
            "lines": MetadataValue.int(accepted.height),
            "units": MetadataValue.int(int(accepted.get_column("quantity").sum() or 0)),
            "latest_updated_at": MetadataValue.text(str(newest) if newest else "none"),
        }
        rejects_meta[day] = {
            **table_metadata(warehouse, ["order_rejects"], day, rejected.height),
            "rejected": MetadataValue.int(rejected.height),
            **{f"reason_{k}": MetadataValue.int(v) for k, v in validation.reject_counts(rejected).items()},
        }
    add_partition_metadata(context, orders_meta, asset_key=AssetKey("orders"))
    add_partition_metadata(context, rejects_meta, asset_key=AssetKey("order_rejects"))
    yield Output(
        validated.accepted,
        output_name="orders",
        metadata={
            "store_currency": store_currency,
            "latest_updated_at_run": MetadataValue.text(str(latest_update) if latest_update else "none"),
        },
    )
    yield Output(validated.rejects, output_name="order_rejects")
    yield checks.ingested_balance(validated.ingested, validated.accepted, validated.rejects)
    yield checks.no_order_without_lines(validated.rejects)


@asset(
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    # price_history/<day> holds every offer valid during that day: a day reads its own partition only
    # (see history_window), so the cost of a run does not grow with the history.
    deps=[AssetDep(PRICE_HISTORY, partition_mapping=TimeWindowPartitionMapping())],
    check_specs=checks.ALLOCATION_CHECK_SPECS,
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    metadata=column_schema(schemas.ORDER_ALLOCATIONS_SCHEMA),
)
def order_allocations(
    context: AssetExecutionContext,
    config: AllocationConfig,
    orders: pl.DataFrame,
    warehouse: WarehouseTables,
) -> Iterator[Output | AssetCheckResult]:
    """Each accepted line routed first come first served to the cheapest supplier with stock, or
    backordered; never more units than a supplier's stock snapshot had."""
    window = context.partition_time_window
    days = list(context.partition_keys)
    read = history_window(warehouse, days)
    partitions = sorted({partition for partition in read.values() if partition is not None})
    fallbacks = {day: partition for day, partition in read.items() if partition != day}
    if fallbacks:
        context.log.warning(f"price_history not written for some days, reading earlier ones: {fallbacks}")
    history = warehouse.read_partitions(PRICE_HISTORY.path, partitions) if partitions else None
    snapshots = allocation.normalize_snapshots(history)
    if snapshots.height == 0:
        context.log.warning("price_history is empty: every line will be backordered")
    starts = allocation.snapshots_start(snapshots, orders.get_column("sku"), window.start, window.end)
    lookback, truncated = allocation.lookback_days(
        starts,
        window.start,
        max_days=config.max_lookback_days,
        earliest_day=date.fromisoformat(ORDERS_START_DATE),
    )
    # Earlier days' allocations from snapshots that are still valid count against their stock.
    key = context.asset_key.path
    missing = [day for day in lookback if not warehouse.exists(key, day)]
    if missing:
        context.log.warning(f"allocations of earlier days not materialized yet: {missing[:5]}")
    consumed = allocation.consumed_units(warehouse.read_partitions(key, lookback))
    allocations = allocation.allocate(orders, snapshots, consumed)
    per_day: dict[str, dict[str, Any]] = {}
    for day, part in _by_day(allocations, days).items():
        states = dict(part.group_by("allocation").len().iter_rows()) if part.height else {}
        allocated = part.filter(pl.col("allocation") == "allocated")
        per_day[day] = {
            **table_metadata(warehouse, key, day, part.height),
            "lines": MetadataValue.int(part.height),
            **{
                f"lines_{state}": MetadataValue.int(int(states.get(state, 0)))
                for state in schemas.ALLOCATION_STATES
            },
            "units_allocated": MetadataValue.int(int(allocated.get_column("quantity").sum() or 0)),
            "price_history_read": MetadataValue.text(read[day] or "none"),
        }
    add_partition_metadata(context, per_day)
    yield Output(
        allocations,
        metadata={
            # The run's reads: the history partitions of its days and the earlier days' allocations.
            "price_history_partitions": MetadataValue.text(", ".join(partitions) or "none"),
            "lookback_days": len(lookback),
            "lookback_truncated": truncated,
        },
    )
    yield checks.no_oversell(allocations, snapshots, consumed, lookback_missing=missing)
    yield checks.allocations_match_orders(allocations, orders)


@asset(
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    metadata=column_schema(schemas.SALES_REPORT_SCHEMA),
)
def sales_report(
    context: AssetExecutionContext, order_allocations: pl.DataFrame, warehouse: WarehouseTables
) -> pl.DataFrame:
    """Per day x SKU x supplier: orders, units, revenue, cost at order time and margin (placed and paid
    orders only; cancelled and refunded orders leave it)."""
    report = sales.sales_report(order_allocations)
    per_day: dict[str, dict[str, Any]] = {}
    for day, part in _by_day(report, list(context.partition_keys)).items():
        totals = part.select(pl.col("units").sum(), pl.col("revenue").sum(), pl.col("margin").sum()).row(0)
        per_day[day] = {
            **table_metadata(warehouse, ["sales_report"], day, part.height),
            "units": MetadataValue.int(int(totals[0] or 0)),
            "revenue": MetadataValue.text(f"{totals[1] or 0:.2f}"),
            "margin": MetadataValue.text(f"{totals[2] or 0:.2f}"),
        }
    add_partition_metadata(context, per_day)
    return report


@asset(
    deps=[AssetDep("sales_report", partition_mapping=AllPartitionMapping())],
    group_name=GROUP,
    owners=OWNERS,
    kinds=KINDS,
    metadata=column_schema(schemas.SALES_SUMMARY_SCHEMA),
)
def sales_summary(config: SummaryConfig, warehouse: WarehouseTables) -> Output[pl.DataFrame]:
    """Rolling per-day totals of the latest report days, as a table, a markdown view and plot numbers."""
    summary = sales.sales_summary(warehouse.read_partitions(["sales_report"]), window_days=config.window_days)
    return Output(summary.frame, metadata={"summary": MetadataValue.md(summary.markdown), **summary.metrics})


ORDERS_ASSETS = [ingest_orders, order_allocations, sales_report, sales_summary]
