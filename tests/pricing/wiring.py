"""Test helpers: the pricing definitions with the pieces of pricing_assets.{checks,held,history_assets,debug}
added the way definitions.py adds them, resources bound to a temp warehouse and the sandbox, and data
writers that prefill the warehouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions

from pricing_assets.checks import build_storefront_price_checks
from pricing_assets.debug import build_debug_job
from pricing_assets.definitions import build_definitions_without_resources
from pricing_assets.held import build_approve_job, build_held_assets, build_held_job, build_held_schedule
from pricing_assets.history_assets import (
    build_price_history_asset,
    build_price_history_job,
    build_price_history_schedule,
)
from pricing_assets.logic.batching import assign_batches, batch_index, batch_key
from resources.cdn_file import CdnFile
from resources.config import Registry
from resources.runtime import RuntimeConfig
from resources.schemas import CATALOG_SCHEMA, MONEY, OFFERS_SCHEMA
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager

WEBHOOK_SECRET = "sandbox-storefront-secret"


def pricing_definitions(registry: Registry) -> Definitions:
    """build_definitions_without_resources plus whatever of checks, held/approvals, history and debug_sku
    it does not wire yet (so these tests keep working once definitions.py adds them itself)."""
    base = build_definitions_without_resources(registry)
    keys = {key for assets_def in base.assets or [] for key in getattr(assets_def, "keys", [])}
    jobs = {job.name for job in base.jobs or []}
    schedules = {schedule.name for schedule in base.schedules or []}
    history_job = build_price_history_job()
    held_job = build_held_job()
    assets = [a for a in [*build_held_assets(), build_price_history_asset(registry)] if a.key not in keys]
    new_jobs = [
        j
        for j in [build_approve_job(), held_job, history_job, build_debug_job(registry)]
        if j.name not in jobs
    ]
    new_schedules = [
        s
        for s in [build_held_schedule(held_job), build_price_history_schedule(history_job)]
        if s.name not in schedules
    ]
    extra = Definitions(
        assets=assets,
        asset_checks=[] if base.asset_checks else build_storefront_price_checks(),
        jobs=new_jobs,
        schedules=new_schedules,
    )
    return Definitions.merge(base, extra)


def resources(
    warehouse_dir: Path,
    *,
    config: dict[str, Any] | None = None,
    storefront_url: str = "http://127.0.0.1:9/storefront",
    suppliers: SupplierClients | None = None,
) -> dict[str, Any]:
    """Every resource the pricing location needs, pointed at a temp warehouse (and the sandbox)."""
    return {
        "io_manager": WarehouseIOManager(base_dir=str(warehouse_dir)),
        "warehouse": Warehouse(base_dir=str(warehouse_dir)),
        "service_config": RuntimeConfig(override_json=json.dumps(config or {})),
        "storefront": Storefront(url=storefront_url, webhook_secret=WEBHOOK_SECRET),
        "suppliers": suppliers or SupplierClients(),
        "cdn_files": CdnFile(),
        "shopify": ShopifyStorefront(),
    }


def bind(defs: Definitions, bound: dict[str, Any]) -> Definitions:
    """The definitions with resources bound."""
    return Definitions.merge(defs, Definitions(resources=bound))


def skus_in_batch(batch: str, n_batches: int, count: int, prefix: str = "SKU-") -> list[str]:
    """The first `count` SKUs named prefix + number that hash into `batch`."""
    found: list[str] = []
    number = 0
    while len(found) < count and number < 100_000:
        sku = f"{prefix}{number:06d}"
        if batch_key(batch_index(sku, n_batches)) == batch:
            found.append(sku)
        number += 1
    return found


def write_catalog(warehouse: Warehouse, skus: list[str], n_batches: int, category: str = "games") -> None:
    """Prefill the `catalog` table with active SKUs."""
    frame = pl.DataFrame(
        {
            "sku": skus,
            "title": [f"Item {s}" for s in skus],
            "category": [category] * len(skus),
            "active": [True] * len(skus),
            "product_id": [None] * len(skus),
            "variant_id": [None] * len(skus),
        },
        schema=CATALOG_SCHEMA,
    )
    warehouse.write(assign_batches(frame, n_batches).sort("sku"), ["catalog"])


def write_offers(
    warehouse: Warehouse,
    supplier: str,
    batch: str,
    prices: dict[str, str],
    *,
    currency: str = "EUR",
    stock: int | None = 5,
    fetched_at: datetime | None = None,
) -> None:
    """Prefill one `supplier_offers/<supplier>/<batch>` partition: sku -> price (decimal text)."""
    when = fetched_at or datetime.now(UTC)
    frame = pl.DataFrame(
        {
            "sku": list(prices),
            "supplier": [supplier] * len(prices),
            "price": [Decimal(p) for p in prices.values()],
            "currency": [currency] * len(prices),
            "stock": [stock] * len(prices),
            "in_stock": [True] * len(prices),
            "fetched_at": [when] * len(prices),
        },
        schema={**OFFERS_SCHEMA, "price": MONEY},
    ).with_columns(batch=pl.lit(batch))
    warehouse.write(frame, ["supplier_offers", supplier], batch)


def materialized_partitions(instance: DagsterInstance, key: str) -> set[str]:
    """Partitions of an asset with at least one materialization in the instance."""
    result = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(key)), limit=10_000)
    return {record.partition_key for record in result.records if record.partition_key}


def files_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and modification time (to prove nothing was written)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
