"""The "pricing" code location: assembled from small modules; cross-cutting policy applied here."""

from __future__ import annotations

import gc
import warnings
from functools import cache
from pathlib import Path

from dagster import AssetKey, AssetsDefinition, AssetSelection, BetaWarning, Definitions, definitions

from pricing_assets.alerts import AlertWebhook, build_alert_sensor
from pricing_assets.best_offers import build_best_offers_asset
from pricing_assets.catalog import build_catalog_asset
from pricing_assets.checks import build_storefront_price_checks
from pricing_assets.debug import build_debug_job
from pricing_assets.file_offers import build_file_offer_assets
from pricing_assets.held import build_approve_job, build_held_assets, build_held_job, build_held_schedule
from pricing_assets.history_assets import (
    build_price_history_asset,
    build_price_history_job,
    build_price_history_schedule,
)
from pricing_assets.partitions import catalog_batch_partitions
from pricing_assets.push_sensor import build_storefront_push_sensor, build_storefront_sync_job
from pricing_assets.reconcile import build_reconcile_job, build_reconcile_sensor
from pricing_assets.storefront_prices import build_storefront_prices_asset
from pricing_assets.storefront_sync import build_storefront_sync_asset
from pricing_assets.supplier_files import build_supplier_file_assets, build_supplier_file_schedule
from pricing_assets.supplier_offers import build_supplier_offer_assets
from pricing_assets.sweep import build_cycle_job, build_price_sweep_sensor, build_sweep_job
from resources.cdn_file import CdnFile
from resources.cdn_state import CdnCacheState
from resources.config import Registry, load_registry
from resources.push_state import ApprovalLog, PushState
from resources.service_config import ServiceConfigResource
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.suppliers import SupplierClients
from resources.warehouse import WarehouseIOManager, WarehouseTables


def default_resources(registry_path: str | None = None) -> dict[str, object]:
    """Resources for a deployment: everything outside the process is configured from the environment."""
    return {
        "io_manager": WarehouseIOManager(),
        "warehouse": WarehouseTables(),
        "push_state": PushState(),
        "approval_log": ApprovalLog(),
        "service_config": ServiceConfigResource(registry_path=registry_path),
        "storefront": Storefront.from_env(),
        "suppliers": SupplierClients(registry_path=registry_path),
        "cdn_files": CdnFile(),
        "cdn_state": CdnCacheState(),
        "shopify": ShopifyStorefront(),
        "alert_webhook": AlertWebhook(),
    }


def build_defs(registry_path: str | Path | None = None) -> Definitions:
    """Build the pricing location from a supplier registry (the structure: which suppliers exist)."""
    registry = load_registry(registry_path)
    return Definitions.merge(
        build_definitions_without_resources(registry),
        Definitions(
            # Monitoring watches the whole instance (both code locations), so it is added with the
            # deployment's resources rather than with the pricing assets.
            sensors=[build_alert_sensor()],
            resources=default_resources(str(registry_path) if registry_path else registry.source),
        ),
    )


def build_pricing_assets(registry: Registry) -> list[AssetsDefinition]:
    """Every asset of the pricing location, without resources (tests bind their own)."""
    batches = catalog_batch_partitions(registry.catalog_batches)
    return [
        build_catalog_asset(registry.catalog_batches),
        *build_supplier_file_assets(registry),
        *build_supplier_offer_assets(registry, batches),
        *build_file_offer_assets(registry, batches),
        build_best_offers_asset(registry, batches),
        build_storefront_prices_asset(registry, batches),
        build_storefront_sync_asset(batches),
        *build_held_assets(),
        build_price_history_asset(registry),
    ]


def build_definitions_without_resources(registry: Registry) -> Definitions:
    """Assets, jobs, schedules and sensors: everything but the resources."""
    batches = catalog_batch_partitions(registry.catalog_batches)
    assets = build_pricing_assets(registry)
    # A supplier step is a multi-asset (offers + quarantine, or cache + quarantine): keys, not `.key`.
    file_assets = [a for a in assets if any(k.path[0] == "supplier_files" for k in a.keys)]
    # The quarantine is written by the same step as the offers, so the sweep materializes both.
    supplier_keys = [
        k for a in assets for k in a.keys if k.path[0] in ("supplier_offers", "supplier_quarantine")
    ]
    sweep_selection = AssetSelection.assets(
        *supplier_keys, AssetKey("best_offers"), AssetKey("storefront_prices")
    )
    sweep_job = build_sweep_job(sweep_selection)
    cycle_job = build_cycle_job(sweep_selection | AssetSelection.assets(AssetKey("storefront_sync")))
    sync_job = build_storefront_sync_job()
    reconcile_job = build_reconcile_job()
    history_job = build_price_history_job()
    held_job = build_held_job()
    schedules = [build_held_schedule(held_job), build_price_history_schedule(history_job)]
    if file_assets:
        schedules.append(build_supplier_file_schedule(file_assets))
    return Definitions(
        assets=assets,
        asset_checks=build_storefront_price_checks(),
        jobs=[
            sweep_job,
            cycle_job,
            sync_job,
            reconcile_job,
            build_approve_job(),
            held_job,
            history_job,
            build_debug_job(registry),
        ],
        schedules=schedules,
        sensors=[
            build_price_sweep_sensor(cycle_job, batches),
            build_storefront_push_sensor(sync_job, batches),
            build_reconcile_sensor(reconcile_job, batches),
        ],
    )


@definitions
@cache
def defs() -> Definitions:
    """The deployed location, built when Dagster loads it (importing this module reads nothing)."""
    with warnings.catch_warnings():
        # Only the `backfill_policy` parameter of `@asset` carries a beta marker; BackfillPolicy itself
        # is public and stable, and the same parameter of `@multi_asset` is not marked (docs/decisions.md).
        warnings.filterwarnings("ignore", "Parameter `backfill_policy` of function `asset`", BetaWarning)
        built = build_defs()
    # Everything imported and built so far lives as long as the process. Moving it out of the
    # collector's reach makes every full collection of a run, and the final one at exit, skip it
    # (bench/sweep: ~0.3 s of each run process's exit was that final collection).
    gc.freeze()
    return built
