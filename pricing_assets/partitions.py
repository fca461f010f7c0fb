"""Partitions of the pricing location and the backfill policy of batch assets."""

import polars as pl
from dagster import AssetKey, BackfillPolicy, DailyPartitionsDefinition, StaticPartitionsDefinition

from pricing_assets.logic.batching import batch_keys, in_batches

# History starts here; earlier days have no offers to record.
HISTORY_START = "2026-01-01"
# One run may cover many batches (a backfill), paying process start-up once instead of per batch.
BATCH_BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=16)


def catalog_batch_partitions(n: int) -> StaticPartitionsDefinition:
    """`batch-000` ... `batch-{n-1}`: a SKU's batch is md5(sku)[:8 bytes] mod n (docs/pricing.md)."""
    return StaticPartitionsDefinition(batch_keys(n))


def active_batch_skus(catalog: pl.LazyFrame, batches: list[str]) -> pl.DataFrame:
    """The active catalog SKUs of `batches` with their batch: all a supplier step reads of the catalog."""
    wanted = in_batches(batches) & pl.col("active")
    return catalog.filter(wanted).select("sku", "batch").collect()


# end_offset=1: today's partition exists while the day is still open (the schedule fills it as it goes).
daily_partitions = DailyPartitionsDefinition(start_date=HISTORY_START, timezone="UTC", end_offset=1)


def offers_key(supplier_id: str) -> AssetKey:
    """The asset key of one supplier's offers."""
    return AssetKey(["supplier_offers", supplier_id])
