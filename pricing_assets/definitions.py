"""The "pricing" code location: assembled from small modules; cross-cutting policy applied here."""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions

from pricing_assets.catalog import build_catalog_asset
from pricing_assets.offers import build_best_offers_asset, build_storefront_prices_asset
from pricing_assets.partitions import catalog_batch_partitions
from pricing_assets.storefront_sync import build_storefront_sync_asset
from pricing_assets.supplier_offers import build_supplier_offer_assets
from resources.config import load_registry
from resources.runtime import RuntimeConfig
from resources.storefront import Storefront
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager


def default_resources(registry_path: str | None = None) -> dict[str, object]:
    """Resources for a deployment: everything outside the process is configured from the environment."""
    return {
        "io_manager": WarehouseIOManager(),
        "warehouse": Warehouse(),
        "service_config": RuntimeConfig(),
        "storefront": Storefront.from_env(),
        "suppliers": SupplierClients(registry_path=registry_path),
    }


def build_defs(registry_path: str | Path | None = None) -> Definitions:
    """Build the pricing location from a supplier registry (the structure: which suppliers exist)."""
    registry = load_registry(registry_path)
    batches = catalog_batch_partitions(registry.catalog_batches)
    assets = [
        build_catalog_asset(registry.catalog_batches),
        *build_supplier_offer_assets(registry, batches),
        build_best_offers_asset(registry, batches),
        build_storefront_prices_asset(registry, batches),
        build_storefront_sync_asset(batches),
    ]
    return Definitions(
        assets=assets,
        resources=default_resources(str(registry_path) if registry_path else registry.source),
    )


defs = build_defs()
