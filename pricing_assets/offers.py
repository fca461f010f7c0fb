"""`best_offers` and `storefront_prices`: thin wiring around the pure functions in pricing_assets.logic."""

from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from pricing_assets.held import read_approvals, release_approved
from pricing_assets.logic.best_offers import select_best_offers
from pricing_assets.logic.guard import apply_guard
from pricing_assets.logic.markup import apply_markup
from pricing_assets.partitions import BATCH_BACKFILL_POLICY, LEDGER_KEY, offers_key
from resources.config import Registry
from resources.runtime import RuntimeConfig
from resources.schemas import OFFERS_SCHEMA, empty_frame
from resources.warehouse import Warehouse


def read_supplier_offers(warehouse: Warehouse, supplier_ids: list[str], batches: list[str]) -> pl.DataFrame:
    """Every supplier's last good offers for the batches (a supplier down keeps its previous file)."""
    frames = []
    for supplier_id in supplier_ids:
        frame = warehouse.read_partitions(offers_key(supplier_id).path, batches)
        if frame is not None and frame.height:
            frames.append(frame.select(list(OFFERS_SCHEMA)))
    return pl.concat(frames) if frames else empty_frame(OFFERS_SCHEMA)


def best_offers_metadata(
    best: pl.DataFrame, offers_considered: int, supplier_order: list[str], enabled: list[str]
) -> dict[str, MetadataValue]:
    """Numeric metadata the UI can plot: availability, SKUs won per supplier, spread statistics."""
    available = best.filter(pl.col("available"))
    won = dict(available.group_by("supplier").len().iter_rows())
    spread = available.get_column("spread").drop_nulls().cast(pl.Float64)
    return {
        "skus": MetadataValue.int(best.height),
        "available": MetadataValue.int(available.height),
        "unavailable": MetadataValue.int(best.height - available.height),
        "offers_considered": MetadataValue.int(offers_considered),
        "suppliers_used": MetadataValue.int(len(won)),
        "suppliers_disabled": MetadataValue.text(
            ", ".join(s for s in supplier_order if s not in enabled) or "none"
        ),
        # One key per registry supplier, zero included, so every materialization plots the same series.
        **{f"chosen_{s}": MetadataValue.int(int(won.get(s, 0))) for s in supplier_order},
        "single_offer_skus": MetadataValue.int(int((available.get_column("offer_count") == 1).sum())),
        "spread_mean": MetadataValue.float(float(spread.mean() or 0.0)),
        "spread_median": MetadataValue.float(float(spread.median() or 0.0)),
        "spread_p90": MetadataValue.float(float(spread.quantile(0.9) or 0.0)),
        "spread_max": MetadataValue.float(float(spread.max() or 0.0)),
    }


def build_best_offers_asset(registry: Registry, partitions_def: PartitionsDefinition) -> AssetsDefinition:
    """`best_offers`: the cheapest available offer per SKU of each batch (DESIGN §4)."""

    @asset(
        name="best_offers",
        group_name="pricing",
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        ins={"catalog": AssetIn("catalog")},
        deps=[offers_key(entry.id) for entry in registry.suppliers],
        kinds={"polars"},
    )
    def best_offers(
        context: AssetExecutionContext,
        catalog: pl.LazyFrame,
        warehouse: Warehouse,
        service_config: RuntimeConfig,
    ) -> pl.DataFrame:
        """Cheapest available offer per SKU, chosen supplier, runner-up, offer count and spread."""
        config = service_config.load()
        config.check_suppliers(registry.order)
        batches = list(context.partition_keys)
        columns = ["sku", "category", "active", "batch"]
        batch_catalog = catalog.filter(pl.col("batch").is_in(batches)).select(columns).collect()
        offers = read_supplier_offers(warehouse, registry.order, batches)
        enabled = [supplier for supplier in registry.order if config.enabled(supplier)]
        best = select_best_offers(
            batch_catalog,
            offers,
            supplier_order=registry.order,
            enabled=enabled,
            fx=registry.fx_rates(),
            now=datetime.now(UTC),
            staleness_ttl=config.staleness_ttl,
        )
        best = best.join(batch_catalog.select("sku", "batch"), on="sku", how="left")
        context.add_output_metadata(best_offers_metadata(best, offers.height, registry.order, enabled))
        return best

    return best_offers


def read_last_pushed(warehouse: Warehouse, batches: list[str]) -> pl.DataFrame:
    """What the storefront last acknowledged for these batches (empty before the first push)."""
    ledger = warehouse.read_partitions(LEDGER_KEY, batches)
    if ledger is None:
        return pl.DataFrame(
            schema={
                "sku": pl.String,
                "price": pl.Decimal(20, 4),
                "available": pl.Boolean,
                "supplier": pl.String,
            }
        )
    return ledger.select("sku", "price", "available", "supplier")


def storefront_prices_metadata(guarded: pl.DataFrame, released: int) -> dict[str, MetadataValue]:
    """Numeric metadata the UI can plot: price changes (up, down), held, released, unavailable."""
    price, last = pl.col("price"), pl.col("last_pushed_price")
    counts = guarded.select(
        changes=(price.is_not_null() & (last.is_null() | (price != last))).sum(),
        increases=(price > last).sum(),
        decreases=(price < last).sum(),
        held=pl.col("held").sum(),
        unavailable=(~pl.col("available").fill_null(False)).sum(),
    ).row(0, named=True)
    change = guarded.get_column("change_pct").drop_nulls().abs()
    return {
        "skus": MetadataValue.int(guarded.height),
        "price_changes": MetadataValue.int(int(counts["changes"] or 0)),
        "price_increases": MetadataValue.int(int(counts["increases"] or 0)),
        "price_decreases": MetadataValue.int(int(counts["decreases"] or 0)),
        "held": MetadataValue.int(int(counts["held"] or 0)),
        "released_by_approval": MetadataValue.int(released),
        "unavailable": MetadataValue.int(int(counts["unavailable"] or 0)),
        "max_abs_change_pct": MetadataValue.float(float(change.max() or 0.0)),
    }


def build_storefront_prices_asset(
    registry: Registry, partitions_def: PartitionsDefinition
) -> AssetsDefinition:
    """`storefront_prices`: target price after markup, rounding, floor and guard (DESIGN §4)."""

    @asset(
        name="storefront_prices",
        group_name="pricing",
        partitions_def=partitions_def,
        backfill_policy=BATCH_BACKFILL_POLICY,
        kinds={"polars"},
    )
    def storefront_prices(
        context: AssetExecutionContext,
        best_offers: pl.DataFrame,
        warehouse: Warehouse,
        service_config: RuntimeConfig,
    ) -> pl.DataFrame:
        """The price each SKU should show, in the store currency, with held changes flagged."""
        config = service_config.load()
        batches = list(context.partition_keys)
        priced = apply_markup(best_offers, config.markup).with_columns(
            pl.lit(registry.store_currency).alias("currency")
        )
        guarded = apply_guard(priced, read_last_pushed(warehouse, batches), config.guard)
        # Approved changes (approve_held_prices) are released here, exactly the approved (sku, price).
        guarded, released = release_approved(guarded, read_approvals(warehouse))
        context.add_output_metadata(storefront_prices_metadata(guarded, released))
        return guarded

    return storefront_prices
