"""The orders location's table contracts: statuses, reject reasons and each table's columns."""

from __future__ import annotations

import polars as pl

from resources.schemas import MONEY, UTC_TS

STATUSES: tuple[str, ...] = ("placed", "paid", "cancelled", "refunded")
REVENUE_STATUSES: tuple[str, ...] = ("placed", "paid")
# Statuses whose lines take stock: everything but cancelled (a refund comes after delivery).
ALLOCATING_STATUSES: tuple[str, ...] = ("placed", "paid", "refunded")
# Reject reasons, in the order they are tested (a line gets the first that applies).
REJECT_REASONS: tuple[str, ...] = (
    "line_without_order",
    "order_without_lines",
    "unknown_status",
    "unknown_sku",
    "non_positive_quantity",
    "negative_price",
    "currency_mismatch",
    "duplicate_line",
)
ALLOCATION_STATES: tuple[str, ...] = ("allocated", "backordered", "cancelled")

DAY = pl.String()

# orders/<day>: accepted order lines, allow-listed columns only (no payment or address data).
ORDERS_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "order_id": pl.Int64(),
    "customer_id": pl.String(),
    "status": pl.String(),
    "currency": pl.String(),
    "payment_method": pl.String(),
    "created_at": UTC_TS,
    "updated_at": UTC_TS,
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
}

# order_rejects/<day>: lines (or empty orders) that failed validation, with the reason.
ORDER_REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "order_id": pl.Int64(),
    "status": pl.String(),
    "currency": pl.String(),
    "created_at": UTC_TS,
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
    "reason": pl.String(),
}

# order_allocations/<day>: every accepted line with its supplier (or why it has none).
ORDER_ALLOCATIONS_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "fcfs_rank": pl.Int64(),  # 1-based position in the day's first-come-first-served queue
    "order_id": pl.Int64(),
    "customer_id": pl.String(),
    "status": pl.String(),
    "created_at": UTC_TS,
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
    "allocation": pl.String(),  # allocated | backordered | cancelled
    "supplier": pl.String(),
    "unit_cost": MONEY,  # the supplier's cost (store currency) valid at created_at
    "snapshot_valid_from": UTC_TS,  # the price_history row the units came from
    "snapshot_stock": pl.Int64(),  # its stock; null = unknown (unlimited)
}

# sales_report/<day>: per day x SKU x supplier.
SALES_REPORT_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "sku": pl.String(),
    "supplier": pl.String(),
    "orders": pl.Int64(),
    "units": pl.Int64(),
    "revenue": MONEY,
    "cost": MONEY,
    "margin": MONEY,
}

# sales_summary: per-day totals over the rolling window.
SALES_SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "day": DAY,
    "skus": pl.Int64(),
    "units": pl.Int64(),
    "revenue": MONEY,
    "cost": MONEY,
    "margin": MONEY,
}


def empty_table(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A table with these columns and no rows."""
    return pl.DataFrame(schema=schema)


def day_expr(column: str = "created_at") -> pl.Expr:
    """The UTC day (YYYY-MM-DD) of a timestamp column."""
    return pl.col(column).dt.date().cast(pl.String)
