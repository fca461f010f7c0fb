"""`storefront_prices`: the price each SKU should show, wired around pricing_assets/logic/pricing.py."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from pricing_assets import OWNERS
from pricing_assets.logic.pricing import price_offers
from pricing_assets.partitions import BATCH_BACKFILL_POLICY
from resources.config import Registry
from resources.partition_metadata import add_partition_metadata, table_metadata
from resources.push_state import FEEDBACK_METADATA_KEY, ApprovalLog, PushState, feedback_markdown
from resources.schemas import (
    BEST_OFFERS_SCHEMA,
    STOREFRONT_PRICES_SCHEMA,
    column_schema,
)
from resources.service_config import ServiceConfigResource
from resources.warehouse import WarehouseTables


def storefront_prices_metadata(
    guarded: pl.DataFrame, released: pl.Series, batches: list[str]
) -> dict[str, dict[str, MetadataValue]]:
    """Per batch, numbers the UI can plot: price changes (up, down), held, released, unavailable.

    `released` flags, row for row, the holds an approval released in this run.
    """
    price, last = pl.col("price"), pl.col("last_pushed_price")
    stats = {
        row["batch"]: row
        for row in guarded.with_columns(released.alias("_released"))
        .group_by("batch")
        .agg(
            skus=pl.len(),
            changes=(price.is_not_null() & (last.is_null() | (price != last))).sum(),
            increases=(price > last).sum(),
            decreases=(price < last).sum(),
            held=pl.col("held").sum(),
            released=pl.col("_released").sum(),
            unavailable=(~pl.col("available").fill_null(False)).sum(),
            max_abs_change_pct=pl.col("change_pct").abs().max(),
        )
        .iter_rows(named=True)
    }
    out: dict[str, dict[str, MetadataValue]] = {}
    for batch in batches:
        row = stats.get(batch, {})

        def count(name: str, row: dict = row) -> MetadataValue:
            return MetadataValue.int(int(row.get(name) or 0))

        out[batch] = {
            "skus": count("skus"),
            "price_changes": count("changes"),
            "price_increases": count("increases"),
            "price_decreases": count("decreases"),
            "held": count("held"),
            "released_by_approval": count("released"),
            "unavailable": count("unavailable"),
            "max_abs_change_pct": MetadataValue.float(float(row.get("max_abs_change_pct") or 0.0)),
        }
    return out


def build_storefront_prices_asset(
    registry: Registry, partitions_def: PartitionsDefinition
) -> AssetsDefinition:
    """`storefront_prices`: target price after markup, rounding, floor and guard (docs/architecture.md §4)."""

    @asset(
        name="storefront_prices",
        group_name="pricing",
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        owners=OWNERS,
        kinds={"polars", "parquet"},
        metadata={
            # The stored table keeps every best_offers column (and its batch) before the price columns.
            **column_schema({**BEST_OFFERS_SCHEMA, "batch": pl.String(), **STOREFRONT_PRICES_SCHEMA}),
            # Inputs downstream of this asset (a cycle the graph cannot draw), read through resources.
            FEEDBACK_METADATA_KEY: MetadataValue.md(feedback_markdown()),
        },
    )
    def storefront_prices(
        context: AssetExecutionContext,
        best_offers: pl.DataFrame,
        warehouse: WarehouseTables,
        push_state: PushState,
        approval_log: ApprovalLog,
        service_config: ServiceConfigResource,
    ) -> pl.DataFrame:
        """The price each SKU should show, in the store currency, with held changes flagged."""
        config = service_config.load()
        batches = list(context.partition_keys)
        priced = price_offers(
            best_offers,
            markup=config.markup,
            guard=config.guard,
            store_currency=registry.store_currency,
            last_pushed=push_state.acknowledged(batches),
            approvals=approval_log.read(),
        )
        guarded = priced.prices
        per_batch = storefront_prices_metadata(guarded, priced.released, batches)
        for batch, metadata in per_batch.items():
            metadata.update(table_metadata(warehouse, ["storefront_prices"], batch, metadata["skus"].value))
        add_partition_metadata(context, per_batch)
        return guarded

    return storefront_prices
