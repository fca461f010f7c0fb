"""Asset checks of the orders location: pure functions over frames returning AssetCheckResult.

They run inside the assets that produce the frames (declared through the specs below), so they see
exactly what was written, without reading it back; the blocking ones stop downstream assets.
"""

from __future__ import annotations

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from orders_assets.allocation import stock_balance

ORDERS = AssetKey("orders")
ORDER_ALLOCATIONS = AssetKey("order_allocations")

INGESTED_BALANCE = AssetCheckSpec(
    "ingested_balance",
    asset=ORDERS,
    blocking=True,
    description="Every row read from the database is either accepted or rejected: ingested = accepted + "
    "rejected.",
)
NO_ORDER_WITHOUT_LINES = AssetCheckSpec(
    "no_order_without_lines",
    asset=ORDERS,
    description="The seed's balance query: no order in the database without any line (warns).",
)
NO_OVERSELL = AssetCheckSpec(
    "no_oversell",
    asset=ORDER_ALLOCATIONS,
    blocking=True,
    description="Snapshot stock - allocated >= 0 for every SKU, supplier and stock snapshot, counting "
    "units earlier days took from the same snapshot; every allocated line has an in-stock snapshot.",
)
ALLOCATIONS_MATCH_ORDERS = AssetCheckSpec(
    "allocations_match_orders",
    asset=ORDER_ALLOCATIONS,
    blocking=True,
    description="Every allocation row belongs to an existing accepted order line, once, with its quantity; "
    "every accepted line has exactly one allocation row.",
)

ORDERS_CHECK_SPECS = [INGESTED_BALANCE, NO_ORDER_WITHOUT_LINES]
ALLOCATION_CHECK_SPECS = [NO_OVERSELL, ALLOCATIONS_MATCH_ORDERS]


def _sample(frame: pl.DataFrame, limit: int = 5) -> str:
    return str(frame.head(limit).to_dicts())


def ingested_balance(ingested: int, accepted: pl.DataFrame, rejects: pl.DataFrame) -> AssetCheckResult:
    """Passes when ingested rows = accepted lines + rejected rows."""
    balance = ingested - accepted.height - rejects.height
    return AssetCheckResult(
        check_name=INGESTED_BALANCE.name,
        asset_key=ORDERS,
        passed=balance == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "ingested": ingested,
            "accepted": accepted.height,
            "rejected": rejects.height,
            "unaccounted": balance,
        },
    )


def no_order_without_lines(rejects: pl.DataFrame) -> AssetCheckResult:
    """Warns when the database holds orders without any line (they are rejected, never allocated)."""
    empty = rejects.filter(pl.col("reason") == "order_without_lines")
    return AssetCheckResult(
        check_name=NO_ORDER_WITHOUT_LINES.name,
        asset_key=ORDERS,
        passed=empty.height == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "orders_without_lines": empty.height,
            "examples": MetadataValue.text(str(empty.get_column("order_id").head(10).to_list())),
        },
    )


def no_oversell(
    allocations: pl.DataFrame,
    snapshots: pl.DataFrame,
    consumed: pl.DataFrame | None = None,
    *,
    lookback_missing: list[str] | None = None,
) -> AssetCheckResult:
    """Fails when any snapshot gave more units than it had, or a line was allocated without stock."""
    balance = stock_balance(allocations, snapshots, consumed)
    violations = balance.filter(pl.col("violation"))
    known = balance.filter(pl.col("stock").is_not_null())
    metadata = {
        "snapshots_checked": balance.height,
        "violations": violations.height,
        "units_allocated": int(balance.get_column("allocated").sum() or 0),
        "min_remaining_known_stock": int(known.get_column("remaining").min()) if known.height else -1,
        "lookback_days_missing": MetadataValue.text(", ".join(lookback_missing or []) or "none"),
    }
    if violations.height:
        metadata["worst"] = MetadataValue.text(_sample(violations.sort("remaining", nulls_last=False)))
    return AssetCheckResult(
        check_name=NO_OVERSELL.name,
        asset_key=ORDER_ALLOCATIONS,
        passed=violations.height == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
    )


def allocations_match_orders(allocations: pl.DataFrame, orders: pl.DataFrame) -> AssetCheckResult:
    """Fails on allocation rows without their order line, duplicates, or accepted lines left out."""
    key = ["order_id", "sku", "quantity"]
    rows = allocations.select(key)
    distinct = rows.unique()
    matched = distinct.join(orders.select(key), on=key, how="semi").height
    duplicates = rows.height - distinct.height
    stray = distinct.height - matched
    # `orders` has one row per (order_id, sku) (its pandera contract), so this counts lines left out.
    missing = orders.height - matched
    return AssetCheckResult(
        check_name=ALLOCATIONS_MATCH_ORDERS.name,
        asset_key=ORDER_ALLOCATIONS,
        passed=stray == 0 and missing == 0 and duplicates == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "allocation_rows": allocations.height,
            "order_lines": orders.height,
            "without_order_line": stray,
            "lines_not_allocated": missing,
            "duplicates": duplicates,
        },
    )
