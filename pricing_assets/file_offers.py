"""`supplier_offers/<id>` for file suppliers: batch slices of the cached CDN file, no network."""

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from pricing_assets.partitions import BATCH_BACKFILL_POLICY, active_batch_skus, offers_key
from pricing_assets.supplier_files import cache_key, read_cached_offers
from resources.config import Registry, SupplierEntry
from resources.runtime import RuntimeConfig
from resources.schemas import OFFERS_SCHEMA
from resources.warehouse import Warehouse


def _build_one(entry: SupplierEntry, partitions_def: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=offers_key(entry.id),
        group_name="supplier_feeds",
        description=f"Offers of file supplier {entry.id} for the batch, sliced from the cached CDN file.",
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        ins={"catalog": AssetIn("catalog")},
        deps=[AssetKey(cache_key(entry.id))],
        kinds={"polars"},
        metadata={"supplier": entry.id, "adapter": entry.kind},
    )
    def file_offers(
        context: AssetExecutionContext,
        catalog: pl.LazyFrame,
        warehouse: Warehouse,
        service_config: RuntimeConfig,
    ) -> pl.DataFrame:
        """The cached file's offers for the run's active batch SKUs (stale ones age out in best_offers)."""
        config = service_config.load()
        batches = list(context.partition_keys)
        batch_catalog = active_batch_skus(catalog, batches)
        offers = read_cached_offers(warehouse, entry.id, batch_catalog.get_column("sku"))
        offers = offers.join(batch_catalog, on="sku", how="inner").select([*OFFERS_SCHEMA, "batch"])
        cached = warehouse.exists(cache_key(entry.id))
        if not cached:
            context.log.warning(
                f"supplier {entry.id}: no cached file yet; materialize supplier_files/{entry.id}"
            )
        context.add_output_metadata(
            {
                "rows": MetadataValue.int(offers.height),
                "skus": MetadataValue.int(batch_catalog.height),
                "cache_present": MetadataValue.bool(cached),
                "enabled": MetadataValue.bool(config.enabled(entry.id)),
            }
        )
        return offers

    return file_offers


def build_file_offer_assets(
    registry: Registry, partitions_def: PartitionsDefinition
) -> list[AssetsDefinition]:
    """One `supplier_offers/<id>` asset per `cdn_file` supplier."""
    return [_build_one(entry, partitions_def) for entry in registry.suppliers if entry.kind == "cdn_file"]
