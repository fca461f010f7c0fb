"""The orders location's assets (DESIGN §3): thin wiring of logic.py to the database and the warehouse."""

from collections.abc import Iterator
from datetime import date

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
    asset,
    multi_asset,
)
from pydantic import Field

from orders_assets import checks, logic
from orders_assets.partitions import ORDERS_START_DATE, daily_partitions
from resources.config import load_registry
from resources.orders_db import OrdersDatabase
from resources.warehouse import Warehouse

GROUP = "orders"
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


def _known_skus(warehouse: Warehouse) -> pl.Series:
    if not warehouse.exists(CATALOG.path):
        raise FileNotFoundError(
            f"no catalog at {warehouse.path(CATALOG.path)}: materialize the pricing location's `catalog` "
            "first (orders are validated against it)"
        )
    return warehouse.read(CATALOG.path).get_column("sku")


@multi_asset(
    name="ingest_orders",
    outs={
        "orders": AssetOut(
            description="Accepted order lines of the day (by created_at), allow-listed columns only: no "
            "card number, CVC or billing address ever leaves the database.",
            group_name=GROUP,
        ),
        "order_rejects": AssetOut(
            description="Rows that failed validation, one reason each (ingested = accepted + rejected).",
            group_name=GROUP,
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
    warehouse: Warehouse,
) -> Iterator[Output | AssetCheckResult]:
    """Read the window's orders from the database and split them into accepted lines and rejects."""
    window = context.partition_time_window
    store_currency = _store_currency(config)
    raw = orders_db.read_window(window.start, window.end)
    validated = logic.validate_orders(
        raw.orders,
        raw.lines,
        known_skus=_known_skus(warehouse),
        store_currency=store_currency,
        fallback_day=context.partition_keys[0],
    )
    reasons = logic.reject_counts(validated.rejects)
    latest_update = raw.orders.get_column("updated_at").max()
    context.log.info(
        f"{len(context.partition_keys)} day(s) from {orders_db.safe_url()}: {validated.ingested} rows, "
        f"{validated.accepted.height} accepted, {validated.rejects.height} rejected"
    )
    yield Output(
        validated.accepted,
        output_name="orders",
        metadata={
            "orders": raw.orders.height,
            "lines": validated.accepted.height,
            "units": int(validated.accepted.get_column("quantity").sum() or 0),
            "store_currency": store_currency,
            "latest_updated_at": MetadataValue.text(str(latest_update) if latest_update else "none"),
        },
    )
    yield Output(
        validated.rejects,
        output_name="order_rejects",
        metadata={"rejected": validated.rejects.height, **{f"reason_{k}": v for k, v in reasons.items()}},
    )
    yield checks.ingested_balance(validated.ingested, validated.accepted, validated.rejects)
    yield checks.no_order_without_lines(validated.rejects)


@asset(
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    # Snapshots valid on a day may have started on any earlier day, so every day of history is read.
    deps=[AssetDep(PRICE_HISTORY, partition_mapping=AllPartitionMapping())],
    check_specs=checks.ALLOCATION_CHECK_SPECS,
    group_name=GROUP,
)
def order_allocations(
    context: AssetExecutionContext,
    config: AllocationConfig,
    orders: pl.DataFrame,
    warehouse: Warehouse,
) -> Iterator[Output | AssetCheckResult]:
    """Each accepted line routed first come first served to the cheapest supplier with stock, or
    backordered; never more units than a supplier's stock snapshot had."""
    window = context.partition_time_window
    snapshots = logic.normalize_snapshots(warehouse.read_partitions(PRICE_HISTORY.path))
    if snapshots.height == 0:
        context.log.warning("price_history is empty: every line will be backordered")
    starts = logic.snapshots_start(snapshots, orders.get_column("sku"), window.start, window.end)
    days, truncated = logic.lookback_days(
        starts,
        window.start,
        max_days=config.max_lookback_days,
        earliest_day=date.fromisoformat(ORDERS_START_DATE),
    )
    # Earlier days' allocations from snapshots that are still valid count against their stock.
    key = context.asset_key.path
    missing = [day for day in days if not warehouse.exists(key, day)]
    if missing:
        context.log.warning(f"allocations of earlier days not materialized yet: {missing[:5]}")
    consumed = logic.consumed_units(warehouse.read_partitions(key, days))
    allocations = logic.allocate(orders, snapshots, consumed)
    states = dict(allocations.group_by("allocation").len().iter_rows()) if allocations.height else {}
    yield Output(
        allocations,
        metadata={
            "lines": allocations.height,
            **{f"lines_{state}": int(states.get(state, 0)) for state in logic.ALLOCATION_STATES},
            "units_allocated": int(
                allocations.filter(pl.col("allocation") == "allocated").get_column("quantity").sum() or 0
            ),
            "lookback_days": len(days),
            "lookback_truncated": truncated,
        },
    )
    yield checks.no_oversell(allocations, snapshots, consumed, lookback_missing=missing)
    yield checks.allocations_match_orders(allocations, orders)


@asset(partitions_def=daily_partitions, backfill_policy=SINGLE_RUN, group_name=GROUP)
def sales_report(order_allocations: pl.DataFrame) -> Output[pl.DataFrame]:
    """Per day x SKU x supplier: orders, units, revenue, cost at order time and margin (placed and paid
    orders only; cancelled and refunded orders leave it)."""
    report = logic.sales_report(order_allocations)
    totals = report.select(pl.col("units").sum(), pl.col("revenue").sum(), pl.col("margin").sum()).row(0)
    return Output(
        report,
        metadata={
            "rows": report.height,
            "units": int(totals[0] or 0),
            "revenue": MetadataValue.text(f"{totals[1] or 0:.2f}"),
            "margin": MetadataValue.text(f"{totals[2] or 0:.2f}"),
        },
    )


@asset(deps=[AssetDep("sales_report", partition_mapping=AllPartitionMapping())], group_name=GROUP)
def sales_summary(config: SummaryConfig, warehouse: Warehouse) -> Output[pl.DataFrame]:
    """Rolling per-day totals of the latest report days, as a table, a markdown view and plot numbers."""
    summary = logic.sales_summary(warehouse.read_partitions(["sales_report"]), window_days=config.window_days)
    return Output(summary.frame, metadata={"summary": MetadataValue.md(summary.markdown), **summary.metrics})


ORDERS_ASSETS = [ingest_orders, order_allocations, sales_report, sales_summary]
