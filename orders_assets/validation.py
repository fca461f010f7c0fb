"""Order validation: accepted lines and rejected ones, each with the first rule it fails (docs/orders.md).

A line is rejected for the first failing rule in REJECT_REASONS order; duplicates are judged among lines
that passed every other rule, keyed by (order_id, sku), keeping the first in (quantity, unit_price)
order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pandera.polars as pa
import polars as pl

from orders_assets.schemas import (
    ORDER_REJECTS_SCHEMA,
    ORDERS_SCHEMA,
    REJECT_REASONS,
    STATUSES,
    day_expr,
    empty_table,
)
from resources.schemas import MONEY, UTC_TS


@dataclass(frozen=True)
class Validated:
    """Accepted lines, rejected rows, and how many source rows went in."""

    accepted: pl.DataFrame
    rejects: pl.DataFrame
    ingested: int


def orders_schema(store_currency: str) -> pa.DataFrameSchema:
    """The pandera contract every accepted `orders` frame satisfies."""
    return pa.DataFrameSchema(
        {
            "day": pa.Column(pl.String, pa.Check.str_matches(r"^\d{4}-\d{2}-\d{2}$")),
            "order_id": pa.Column(pl.Int64),
            "customer_id": pa.Column(pl.String, nullable=True),
            "status": pa.Column(pl.String, pa.Check.isin(list(STATUSES))),
            "currency": pa.Column(pl.String, pa.Check.eq(store_currency)),
            "payment_method": pa.Column(pl.String, nullable=True),
            "created_at": pa.Column(UTC_TS),
            "updated_at": pa.Column(UTC_TS),
            "sku": pa.Column(pl.String),
            "quantity": pa.Column(pl.Int64, pa.Check.gt(0)),
            "unit_price": pa.Column(MONEY, pa.Check.ge(Decimal(0))),
        },
        strict=True,
        ordered=True,
        unique=["order_id", "sku"],
        name="orders",
    )


def validate_orders(
    orders: pl.DataFrame,
    lines: pl.DataFrame,
    *,
    known_skus: pl.Series | list[str],
    store_currency: str,
    fallback_day: str,
) -> Validated:
    """Split raw orders and lines into accepted lines and rejects (one reason each).

    `orders` has the OrdersDatabase raw order columns (id, ...), `lines` the raw line columns. A line
    whose order is absent is a `line_without_order`, attributed to the day of the nearest lower order
    id (or `fallback_day` when there is none); an order without any line is one reject row.
    """
    known = pl.Series("sku", known_skus, dtype=pl.String).unique()
    orders = orders.rename({"id": "order_id"}).with_columns(day_expr().alias("day"))
    joined = lines.join(orders, on="order_id", how="left")
    has_order = pl.col("day").is_not_null()
    # Orphans take the day of the closest existing order id below theirs (ids are a sequence).
    orphans = joined.filter(~has_order).select(lines.columns).sort("order_id")
    if orphans.height:
        id_days = orders.select("order_id", "day").sort("order_id")
        orphans = orphans.join_asof(id_days, on="order_id", strategy="backward").with_columns(
            pl.col("day").fill_null(fallback_day)
        )
    empty_orders = orders.join(lines.select("order_id").unique(), on="order_id", how="anti")
    with_order = joined.filter(has_order)
    ingested = lines.height + empty_orders.height

    reason = (
        pl.when(~pl.col("status").is_in(list(STATUSES)))
        .then(pl.lit("unknown_status"))
        .when(~pl.col("sku").is_in(known.implode()))
        .then(pl.lit("unknown_sku"))
        .when(pl.col("quantity").is_null() | (pl.col("quantity") <= 0))
        .then(pl.lit("non_positive_quantity"))
        .when(pl.col("unit_price").is_null() | (pl.col("unit_price") < 0))
        .then(pl.lit("negative_price"))
        .when(pl.col("currency") != store_currency)
        .then(pl.lit("currency_mismatch"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    checked = with_order.with_columns(reason.alias("reason"))
    valid = checked.filter(pl.col("reason").is_null())
    # The second and later valid lines for the same (order, sku) are duplicates. Hashing finds the
    # few repeated keys; only those are ordered to pick the one kept.
    repeated = valid.select("order_id", "sku").is_duplicated()
    twins = valid.filter(repeated).sort(["order_id", "sku", "quantity", "unit_price"])
    twins = twins.with_columns(
        pl.when(pl.int_range(pl.len()).over(["order_id", "sku"]) > 0)
        .then(pl.lit("duplicate_line"))
        .alias("reason")
    )
    accepted = (
        pl.concat([valid.filter(~repeated), twins.filter(pl.col("reason").is_null())])
        .select(list(ORDERS_SCHEMA))
        .sort(["created_at", "order_id", "sku"])
    )
    rejects = pl.concat(
        [
            checked.filter(pl.col("reason").is_not_null()).select(list(ORDER_REJECTS_SCHEMA)),
            twins.filter(pl.col("reason").is_not_null()).select(list(ORDER_REJECTS_SCHEMA)),
            orphans.with_columns(
                pl.lit(None, pl.String).alias("status"),
                pl.lit(None, pl.String).alias("currency"),
                pl.lit(None, UTC_TS).alias("created_at"),
                pl.lit("line_without_order").alias("reason"),
            ).select(list(ORDER_REJECTS_SCHEMA))
            if orphans.height
            else empty_table(ORDER_REJECTS_SCHEMA),
            empty_orders.with_columns(
                pl.lit(None, pl.String).alias("sku"),
                pl.lit(None, pl.Int64).alias("quantity"),
                pl.lit(None, MONEY).alias("unit_price"),
                pl.lit("order_without_lines").alias("reason"),
            ).select(list(ORDER_REJECTS_SCHEMA)),
        ],
        how="vertical_relaxed",
    )
    rejects = rejects.select([pl.col(name).cast(dtype) for name, dtype in ORDER_REJECTS_SCHEMA.items()]).sort(
        ["day", "reason", "order_id", "sku"], nulls_last=True
    )
    accepted = accepted.select([pl.col(name).cast(dtype) for name, dtype in ORDERS_SCHEMA.items()])
    return Validated(
        accepted=orders_schema(store_currency).validate(accepted), rejects=rejects, ingested=ingested
    )


def reject_counts(rejects: pl.DataFrame) -> dict[str, int]:
    """Rejected rows per reason, every reason present (zero when absent)."""
    counts = dict(rejects.group_by("reason").len().iter_rows()) if rejects.height else {}
    return {reason: int(counts.get(reason, 0)) for reason in REJECT_REASONS}
