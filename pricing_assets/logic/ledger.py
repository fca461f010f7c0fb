"""The push ledger as pure functions: the diff of target prices against what the storefront acknowledged,
acknowledgements written in, pending marks, and the journal rows a ledger does not hold yet.

`pricing_assets/storefront_sync.py` runs them against the storefront (docs/architecture.md §7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from resources.schemas import MONEY, UTC_TS
from resources.storefront import ENTRY_SCHEMA

# storefront_sync/<batch>: the storefront's acknowledged state per SKU (the push ledger).
SYNC_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "price": MONEY,  # acknowledged price (null: never acknowledged)
    "currency": pl.String(),
    "available": pl.Boolean(),
    "supplier": pl.String(),
    "version": pl.Int64(),  # per-SKU change counter, +1 per acknowledged change
    "acknowledged_at": UTC_TS,
    "idempotency_key": pl.String(),  # key of the push that the storefront acknowledged
    # null (in sync) | would_push (dry run) | held (guard) | refused | deferred | in_doubt
    "pending_status": pl.String(),
    "pending_price": MONEY,
    "pending_error": pl.String(),
}
_COMPARED = ("price", "available", "supplier")


def empty_ledger() -> pl.DataFrame:
    """A ledger with no SKUs (before the first push)."""
    return pl.DataFrame(schema=SYNC_SCHEMA)


def compute_changes(targets: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Rows whose price, availability or routed supplier differ from what the storefront acknowledged.

    An unavailable SKU keeps its last acknowledged price (docs/architecture.md §4); held rows are never
    pushed.
    """
    current = ledger.select(
        "sku",
        pl.col("price").alias("ack_price"),
        pl.col("available").alias("ack_available"),
        pl.col("supplier").alias("ack_supplier"),
        pl.col("version").alias("ack_version"),
    )
    joined = (
        targets.filter(~pl.col("held"))
        .select("sku", "price", "currency", "available", "supplier")
        .join(current, on="sku", how="left")
        .with_columns(
            pl.when(pl.col("available")).then(pl.col("price")).otherwise(pl.col("ack_price")).alias("price"),
            pl.when(pl.col("available")).then(pl.col("supplier")).otherwise(None).alias("supplier"),
        )
    )
    differs = pl.lit(False)
    for name in _COMPARED:
        differs = differs | pl.col(name).ne_missing(pl.col(f"ack_{name}"))
    return (
        joined.filter(differs)
        .with_columns((pl.col("ack_version").fill_null(0) + 1).alias("version"))
        .select("sku", "price", "currency", "available", "supplier", "version")
        .sort("sku")
    )


def entry_frame(changes: pl.DataFrame) -> pl.DataFrame:
    """Changes as push entries: the price becomes its exact decimal string (never a float)."""
    return changes.select([pl.col(name).cast(dtype) for name, dtype in ENTRY_SCHEMA.items()])


def to_entries(changes: pl.DataFrame) -> list[dict[str, Any]]:
    """Push protocol entries {sku, price (decimal string), currency, available, supplier, version}."""
    return entry_frame(changes).to_dicts()


def apply_acknowledged(ledger: pl.DataFrame, acknowledged: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """The ledger with acknowledged entries (ENTRY_SCHEMA columns + idempotency_key) written in.

    A SKU acknowledged twice in one sync (a resent chunk, then a newer diff) keeps the newest version.
    """
    if acknowledged.is_empty():
        return ledger
    rows = (
        acknowledged.sort("version")
        .unique("sku", keep="last")
        .with_columns(pl.col("price").cast(MONEY), pl.lit(now).cast(UTC_TS).alias("acknowledged_at"))
    )
    rows = rows.select(
        [
            pl.col(n).cast(t) if n in rows.columns else pl.lit(None, dtype=t).alias(n)
            for n, t in SYNC_SCHEMA.items()
        ]
    )
    kept = ledger.select(list(SYNC_SCHEMA)).join(rows.select("sku"), on="sku", how="anti")
    return pl.concat([kept, rows]).sort("sku")


@dataclass
class Pending:
    """Why one SKU is not (yet) what the storefront shows."""

    status: str
    price: Any
    error: str | None = None


def unconfirmed(journal: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Journal rows of chunks the ledger does not fully hold (some entry newer than its version)."""
    if journal.is_empty():
        return journal
    versions = ledger.select("sku", pl.col("version").alias("ack_version"))
    missing = (
        journal.join(versions, on="sku", how="left")
        .filter(pl.col("ack_version").fill_null(0) < pl.col("version"))
        .select("chunk")
        .unique()
    )
    return journal.join(missing, on="chunk", how="semi").sort("chunk", maintain_order=True)


def mark_pending(ledger: pl.DataFrame, pending: Mapping[str, Pending]) -> pl.DataFrame:
    """The ledger with each row's pending status, price and error (SKUs never acknowledged get a row)."""
    if not pending:
        cleared = [
            pl.lit(None, dtype=SYNC_SCHEMA[n]).alias(n) for n in SYNC_SCHEMA if n.startswith("pending_")
        ]
        return ledger.with_columns(cleared).select(list(SYNC_SCHEMA))
    frame = pl.DataFrame(
        {
            "sku": list(pending),
            "p_status": [p.status for p in pending.values()],
            "p_price": [None if p.price is None else str(p.price) for p in pending.values()],
            "p_error": [p.error for p in pending.values()],
        },
        schema={"sku": pl.String, "p_status": pl.String, "p_price": pl.String, "p_error": pl.String},
    ).with_columns(pl.col("p_price").cast(MONEY))
    base = ledger.select([n for n in SYNC_SCHEMA if not n.startswith("pending_")])
    return (
        base.join(frame, on="sku", how="full", coalesce=True)
        .with_columns(
            pl.col("p_status").alias("pending_status"),
            pl.col("p_price").alias("pending_price"),
            pl.col("p_error").alias("pending_error"),
        )
        .select([pl.col(n).cast(t) for n, t in SYNC_SCHEMA.items()])
        .sort("sku")
    )
