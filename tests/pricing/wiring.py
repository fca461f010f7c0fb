"""Test helpers: the pricing location's own resources pointed at a temp warehouse and the sandbox, and
data writers that prefill the warehouse (the definitions are pricing_assets.definitions' own)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, Definitions

from pricing_assets.definitions import build_definitions_without_resources, default_resources
from pricing_assets.logic.batching import assign_batches, batch_index, batch_key
from resources.cdn_state import CdnCacheState
from resources.config import load_registry
from resources.push_state import ApprovalLog, PushState
from resources.schemas import CATALOG_SCHEMA, MONEY, OFFERS_SCHEMA
from resources.service_config import ServiceConfigResource
from resources.storefront import Storefront
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager

WEBHOOK_SECRET = "sandbox-storefront-secret"


def resources(
    warehouse_dir: Path | str,
    *,
    config: dict[str, Any] | None = None,
    storefront_url: str = "http://127.0.0.1:9/storefront",
    suppliers: SupplierClients | None = None,
) -> dict[str, Any]:
    """The pricing location's resources (default_resources), pointed at a temp warehouse and the sandbox."""
    return {
        # Starting from the deployed set, a resource added to the location is in every test too.
        **default_resources(),
        "io_manager": WarehouseIOManager(base_dir=str(warehouse_dir)),
        "warehouse": Warehouse(base_dir=str(warehouse_dir)),
        "push_state": PushState(base_dir=str(warehouse_dir)),
        "approval_log": ApprovalLog(base_dir=str(warehouse_dir)),
        "cdn_state": CdnCacheState(base_dir=str(warehouse_dir)),
        "service_config": ServiceConfigResource(override_json=json.dumps(config or {})),
        "storefront": Storefront(url=storefront_url, webhook_secret=WEBHOOK_SECRET),
        "suppliers": suppliers or SupplierClients(),
    }


def bind(defs: Definitions, bound: dict[str, Any]) -> Definitions:
    """The definitions with resources bound."""
    return Definitions.merge(defs, Definitions(resources=bound))


def pricing_with_catalog(
    warehouse_dir: Path | str, *, batches: int, config: dict[str, Any], storefront_url: str
) -> tuple[Definitions, DagsterInstance]:
    """The pricing location over `batches` catalog batches with these resources (`resources`), and an
    ephemeral instance in which the catalog is already materialized."""
    registry = load_registry().model_copy(update={"catalog_batches": batches})
    defs = bind(
        build_definitions_without_resources(registry),
        resources(warehouse_dir, config=config, storefront_url=storefront_url),
    )
    instance = DagsterInstance.ephemeral()
    catalog = defs.resolve_assets_def("catalog").key
    assert (
        defs.resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[catalog])
        .success
    )
    return defs, instance


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
