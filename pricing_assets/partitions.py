"""Partitions of the pricing location: catalog batches (stable SKU hash) and UTC days."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition, StaticPartitionsDefinition

from pricing_assets.logic.batching import batch_keys

# History starts here; earlier days have no offers to record.
HISTORY_START = "2026-01-01"


def catalog_batch_partitions(n: int) -> StaticPartitionsDefinition:
    """`batch-000` ... `batch-{n-1}`: a SKU's batch is md5(sku)[:8 bytes] mod n (docs/pricing.md)."""
    return StaticPartitionsDefinition(batch_keys(n))


daily_partitions = DailyPartitionsDefinition(start_date=HISTORY_START, timezone="UTC")
