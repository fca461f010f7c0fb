"""Helpers for the storefront tests: target prices in a temp warehouse, and one-call syncs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import AssetSpec, ExecuteInProcessResult, StaticPartitionsDefinition, materialize

from pricing_assets.storefront_sync import build_storefront_sync_asset
from resources.push_state import JOURNAL_KEY, PushState
from resources.schemas import STOREFRONT_PRICES_SCHEMA
from resources.service_config import ServiceConfigResource
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.warehouse import Warehouse, WarehouseIOManager

SECRET = "sandbox-storefront-secret"
SHOPIFY_TOKEN = "sandbox-shopify-token"
BATCHES = StaticPartitionsDefinition(["batch-000", "batch-001"])
SYNC_ASSET = build_storefront_sync_asset(BATCHES)
PRICES_SPEC = AssetSpec("storefront_prices", partitions_def=BATCHES)
# Tiny waits so retry paths take milliseconds.
FAST = {"max_attempts": 3, "backoff_initial_seconds": 0.001, "backoff_max_seconds": 0.005}


def targets(
    n: int,
    *,
    start: int = 0,
    price: str = "10.00",
    step: str = "0.25",
    batch: str = "batch-000",
    **extra: Any,
) -> pl.DataFrame:
    """storefront_prices rows for sandbox SKUs SKU-<start>..: distinct prices, available, routed to alpha."""
    rows = []
    for i in range(start, start + n):
        row = {
            "sku": f"SKU-{i:06d}",
            "available": True,
            "supplier": "alpha",
            "cost": Decimal("5.00"),
            "price": Decimal(price) + Decimal(step) * i,
            "currency": "EUR",
            "last_pushed_price": None,
            "change_pct": None,
            "held": False,
            "hold_reason": None,
        }
        row.update(extra)
        rows.append(row)
    frame = pl.DataFrame(rows, schema=STOREFRONT_PRICES_SCHEMA)
    return frame.with_columns(pl.lit(batch).alias("batch"))


def write_targets(warehouse_dir: Path, frame: pl.DataFrame, batch: str = "batch-000") -> None:
    """Write storefront_prices/<batch>.parquet as the upstream asset would."""
    Warehouse(base_dir=str(warehouse_dir)).write(frame, ["storefront_prices"], batch)


def read_ledger(warehouse_dir: Path, batch: str = "batch-000") -> pl.DataFrame:
    """The storefront_sync ledger of one batch."""
    return Warehouse(base_dir=str(warehouse_dir)).read(["storefront_sync"], batch)


def read_journal(warehouse_dir: Path, batch: str = "batch-000") -> list[list[dict[str, Any]]]:
    """The chunks (lists of entries) in a batch's push journal, in order."""
    warehouse = Warehouse(base_dir=str(warehouse_dir))
    if not warehouse.exists(JOURNAL_KEY, batch):
        return []
    rows = warehouse.read(JOURNAL_KEY, batch)
    return [group.drop("chunk", "key").to_dicts() for _, group in rows.group_by("chunk", maintain_order=True)]


def sync(
    warehouse_dir: Path,
    url: str,
    *,
    batch: str = "batch-000",
    config: dict[str, Any] | None = None,
    secret: str = SECRET,
    adapter: str | None = None,
    shopify: dict[str, Any] | None = None,
    **storefront: Any,
) -> ExecuteInProcessResult:
    """Materialize storefront_sync for one batch against the sandbox; never raises on failure."""
    resources = {
        "io_manager": WarehouseIOManager(base_dir=str(warehouse_dir)),
        "warehouse": Warehouse(base_dir=str(warehouse_dir)),
        "push_state": PushState(base_dir=str(warehouse_dir)),
        "service_config": ServiceConfigResource(override_json=json.dumps(config or {})),
        "storefront": Storefront(
            url=f"{url}/storefront", webhook_secret=secret, push_adapter=adapter, **{**FAST, **storefront}
        ),
        "shopify": ShopifyStorefront(shop_url=f"{url}/shopify", **{**FAST, **(shopify or {})}),
    }
    return materialize(
        [SYNC_ASSET, PRICES_SPEC], partition_key=batch, resources=resources, raise_on_error=False
    )


def sync_metadata(result: ExecuteInProcessResult) -> dict[str, Any]:
    """storefront_sync's metadata from a successful run, or from the Failure of a failed one."""
    if result.success:
        events = result.asset_materializations_for_node("storefront_sync")
        return {k: v.value for k, v in events[-1].metadata.items()}
    failure = next(e for e in result.all_events if e.is_step_failure)
    data = failure.step_failure_data.user_failure_data
    return {k: v.value for k, v in data.metadata.items()}


@pytest.fixture
def shopify_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """The access token the sandbox Shopify accepts, exported as SHOPIFY_ACCESS_TOKEN."""
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", SHOPIFY_TOKEN)
    return SHOPIFY_TOKEN
