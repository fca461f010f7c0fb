"""`storefront_sync`: push what changed to the storefront, exactly once, and keep its acknowledged state."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from pricing_assets.offers import BATCH_BACKFILL_POLICY
from resources.runtime import RuntimeConfig
from resources.schemas import MONEY, UTC_TS
from resources.storefront import PushStats, Storefront
from resources.warehouse import Warehouse

# storefront_sync/<batch>: the storefront's acknowledged state per SKU (the push ledger).
SYNC_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "price": MONEY,
    "currency": pl.String(),
    "available": pl.Boolean(),
    "supplier": pl.String(),
    "version": pl.Int64(),
    "acknowledged_at": UTC_TS,
    "idempotency_key": pl.String(),
    "pending_status": pl.String(),  # null (in sync) | would_push (dry run) | failed | held
    "pending_price": MONEY,
    "pending_error": pl.String(),
}
_COMPARED = ("price", "available", "supplier")


def empty_ledger() -> pl.DataFrame:
    """A ledger with no SKUs (before the first push)."""
    return pl.DataFrame(schema=SYNC_SCHEMA)


def compute_changes(targets: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Rows whose price, availability or routed supplier differ from what the storefront acknowledged.

    An unavailable SKU keeps its last acknowledged price (DESIGN §4); held rows are never pushed.
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


def to_entries(changes: pl.DataFrame) -> list[dict[str, Any]]:
    """Push protocol entries: price as a decimal string, never a float."""
    return [
        {
            "sku": row["sku"],
            "price": None if row["price"] is None else str(row["price"]),
            "currency": row["currency"],
            "available": bool(row["available"]),
            "supplier": row["supplier"],
            "version": int(row["version"]),
        }
        for row in changes.iter_rows(named=True)
    ]


def chunks(entries: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Split entries into push requests of at most `size` prices."""
    return [entries[start : start + size] for start in range(0, len(entries), size)]


def apply_acknowledged(
    ledger: pl.DataFrame, acknowledged: list[dict[str, Any]], key_by_sku: dict[str, str], now: datetime
) -> pl.DataFrame:
    """The ledger with acknowledged entries written in (newer versions replace older rows)."""
    if not acknowledged:
        return ledger
    rows = pl.DataFrame(
        [
            {
                **entry,
                "price": entry["price"],
                "acknowledged_at": now,
                "idempotency_key": key_by_sku[entry["sku"]],
            }
            for entry in acknowledged
        ],
        schema_overrides={"price": pl.String},
    ).with_columns(pl.col("price").cast(MONEY), pl.col("acknowledged_at").cast(UTC_TS))
    for name, dtype in SYNC_SCHEMA.items():
        if name not in rows.columns:
            rows = rows.with_columns(pl.lit(None, dtype=dtype).alias(name))
    rows = rows.select([pl.col(n).cast(t) for n, t in SYNC_SCHEMA.items()])
    kept = ledger.select(list(SYNC_SCHEMA)).filter(~pl.col("sku").is_in(rows.get_column("sku").implode()))
    return pl.concat([kept, rows]).sort("sku")


def build_storefront_sync_asset(partitions_def: PartitionsDefinition) -> AssetsDefinition:
    """The storefront_sync asset for the catalog batches."""

    @asset(
        name="storefront_sync",
        group_name="pricing",
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        kinds={"polars"},
        pool="storefront",
    )
    def storefront_sync(
        context: AssetExecutionContext,
        storefront_prices: pl.DataFrame,
        storefront: Storefront,
        warehouse: Warehouse,
        service_config: RuntimeConfig,
    ) -> pl.DataFrame:
        """What the storefront has acknowledged per SKU, after pushing only what changed."""
        started = time.monotonic()
        config = service_config.load()
        stats = PushStats()
        ledgers = []
        totals = {"pushed": 0, "unchanged": 0, "held": 0, "failed": 0, "would_push": 0}
        errors: list[str] = []
        for batch in context.partition_keys:
            targets = storefront_prices.filter(pl.col("batch") == batch)
            previous = warehouse.read_partitions(["storefront_sync"], [batch])
            ledger = empty_ledger() if previous is None else previous.select(list(SYNC_SCHEMA))
            changes = compute_changes(targets, ledger)
            held = targets.filter(pl.col("held"))
            totals["held"] += held.height
            totals["unchanged"] += targets.height - held.height - changes.height
            entries = to_entries(changes)
            acknowledged: list[dict[str, Any]] = []
            key_by_sku: dict[str, str] = {}
            failed: dict[str, str] = {}
            if config.dry_run:
                totals["would_push"] += len(entries)
                for entry in entries:
                    context.log.info(f"dry run: would push {entry}")
            else:
                for chunk in chunks(entries, config.push_batch_size):
                    outcome = storefront.push_prices(batch, chunk, stats=stats)
                    if outcome.status in ("applied", "already_applied"):
                        acknowledged.extend(chunk)
                        key_by_sku.update({entry["sku"]: outcome.key for entry in chunk})
                    else:
                        errors.append(outcome.error or "push failed")
                        failed.update({entry["sku"]: outcome.error or "push failed" for entry in chunk})
            totals["pushed"] += len(acknowledged)
            totals["failed"] += len(failed)
            ledger = apply_acknowledged(ledger, acknowledged, key_by_sku, datetime.now(UTC))
            ledger = _mark_pending(ledger, changes, held, failed, dry_run=config.dry_run)
            ledgers.append(ledger.with_columns(pl.lit(batch).alias("batch")))
        context.add_output_metadata(
            {
                **{name: MetadataValue.int(value) for name, value in totals.items()},
                "requests": MetadataValue.int(stats.requests),
                "retries": MetadataValue.int(stats.retries),
                "throttled": MetadataValue.int(stats.throttled),
                "duplicates_avoided": MetadataValue.int(stats.duplicates_avoided),
                "dry_run": MetadataValue.bool(config.dry_run),
                "duration_s": MetadataValue.float(round(time.monotonic() - started, 3)),
            }
        )
        result = pl.concat(ledgers) if ledgers else empty_ledger().with_columns(pl.lit("").alias("batch"))
        if errors:
            # A failed step discards its output, but what the storefront did acknowledge must be
            # recorded or it would be pushed again: write the ledger directly, then fail visibly.
            for batch_frame in ledgers:
                warehouse.write(batch_frame, ["storefront_sync"], batch_frame.get_column("batch")[0])
            raise Failure(
                description=f"{totals['failed']} prices still pending after retries: {errors[0]}",
                metadata={"failed": MetadataValue.int(totals["failed"]), "pushed": totals["pushed"]},
            )
        return result

    return storefront_sync


def _mark_pending(
    ledger: pl.DataFrame,
    changes: pl.DataFrame,
    held: pl.DataFrame,
    failed: dict[str, str],
    *,
    dry_run: bool,
) -> pl.DataFrame:
    """Annotate ledger rows with what is still pending (dry-run, failed or held) and why."""
    status: dict[str, tuple[str, Any, str | None]] = {}
    for row in changes.iter_rows(named=True):
        if dry_run:
            status[row["sku"]] = ("would_push", row["price"], None)
        elif row["sku"] in failed:
            status[row["sku"]] = ("failed", row["price"], failed[row["sku"]])
    for row in held.iter_rows(named=True):
        status[row["sku"]] = ("held", row["price"], row.get("hold_reason"))
    if not status:
        return ledger.with_columns(
            pl.lit(None, dtype=pl.String).alias("pending_status"),
            pl.lit(None, dtype=MONEY).alias("pending_price"),
            pl.lit(None, dtype=pl.String).alias("pending_error"),
        )
    pending = pl.DataFrame(
        [{"sku": sku, "p_status": s, "p_price": p, "p_error": e} for sku, (s, p, e) in status.items()],
        schema={"sku": pl.String, "p_status": pl.String, "p_price": MONEY, "p_error": pl.String},
    )
    # SKUs never acknowledged still get a ledger row, so a pending first push is visible.
    missing = pending.filter(~pl.col("sku").is_in(ledger.get_column("sku").implode())).select("sku")
    base = pl.concat([ledger, missing], how="diagonal_relaxed") if missing.height else ledger
    return (
        base.join(pending, on="sku", how="left")
        .with_columns(
            pl.col("p_status").alias("pending_status"),
            pl.col("p_price").alias("pending_price"),
            pl.col("p_error").alias("pending_error"),
        )
        .select([pl.col(n).cast(t) for n, t in SYNC_SCHEMA.items()])
        .sort("sku")
    )
