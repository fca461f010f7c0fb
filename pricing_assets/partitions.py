"""Partitions of the pricing location and the backfill policy of batch assets."""

from dagster import AssetKey, BackfillPolicy, DailyPartitionsDefinition, StaticPartitionsDefinition

from pricing_assets.logic.batching import batch_keys

# History starts here; earlier days have no offers to record.
HISTORY_START = "2026-01-01"
# One run may cover many batches (a backfill), paying process start-up once instead of per batch.
BATCH_BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=16)


def catalog_batch_partitions(n: int) -> StaticPartitionsDefinition:
    """`batch-000` ... `batch-{n-1}`: a SKU's batch is md5(sku)[:8 bytes] mod n (docs/pricing.md)."""
    return StaticPartitionsDefinition(batch_keys(n))


# end_offset=1: today's partition exists while the day is still open (the schedule fills it as it goes).
daily_partitions = DailyPartitionsDefinition(start_date=HISTORY_START, timezone="UTC", end_offset=1)


def offers_key(supplier_id: str) -> AssetKey:
    """The asset key of one supplier's offers."""
    return AssetKey(["supplier_offers", supplier_id])
