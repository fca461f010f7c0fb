"""supplier_offers/<id> of a file supplier over a range: each batch's own numbers, its own freshness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from dagster import AssetKey, DagsterInstance, asset, materialize

from pricing_assets.file_offers import build_file_offer_assets
from pricing_assets.logic.batching import assign_batches
from pricing_assets.offers_freshness import FRESH_CHECK
from pricing_assets.partitions import catalog_batch_partitions, offers_key
from resources.cdn_state import write_cached_offers
from resources.config import load_registry
from resources.schemas import CATALOG_SCHEMA, OFFERS_SCHEMA
from resources.service_config import ServiceConfigResource
from resources.warehouse import Warehouse, WarehouseIOManager

BATCHES = 4
RANGE = ("batch-001", "batch-002")
NOW = datetime.now(UTC)


def _catalog() -> pl.DataFrame:
    n = 400
    rows = {
        "sku": [f"SKU-{i:05d}" for i in range(n)],
        "title": ["t"] * n,
        "category": ["c"] * n,
        "active": [i % 10 != 0 for i in range(n)],  # inactive SKUs are never asked for
        "product_id": [str(i) for i in range(n)],
        "variant_id": [str(i) for i in range(n)],
    }
    return assign_batches(
        pl.DataFrame(rows).cast({k: v for k, v in CATALOG_SCHEMA.items() if k in rows}), BATCHES
    )


@asset(name="catalog")
def catalog_stub() -> pl.DataFrame:
    """Stand-in for the catalog asset."""
    return _catalog()


def _cached(supplier: str, catalog: pl.DataFrame) -> pl.DataFrame:
    """Offers for every third SKU; batch-001's fetched two days ago, the others a minute ago."""
    picked = catalog.filter(pl.int_range(pl.len()) % 3 == 0)
    old = picked.get_column("batch") == "batch-001"
    return pl.DataFrame(
        {
            "sku": picked.get_column("sku"),
            "supplier": [supplier] * picked.height,
            "price": [Decimal("9.99")] * picked.height,
            "currency": ["EUR"] * picked.height,
            "stock": [3] * picked.height,
            "in_stock": [True] * picked.height,
            "fetched_at": [NOW - (timedelta(days=2) if o else timedelta(minutes=1)) for o in old],
        },
        schema=OFFERS_SCHEMA,
    )


def test_each_batch_of_a_range_gets_its_own_rows_skus_and_freshness(tmp_path: Path) -> None:
    raw = load_registry().model_dump(mode="json", exclude={"source"})
    raw["catalog_batches"] = BATCHES
    raw["suppliers"] = [entry for entry in raw["suppliers"] if entry["kind"] == "cdn_file"]
    (tmp_path / "suppliers.yaml").write_text(yaml.safe_dump(raw))
    registry = load_registry(tmp_path / "suppliers.yaml")
    supplier = registry.suppliers[0].id
    assets = build_file_offer_assets(registry, catalog_batch_partitions(BATCHES))
    warehouse = Warehouse(base_dir=str(tmp_path / "warehouse"))
    catalog = _catalog()
    write_cached_offers(warehouse, supplier, _cached(supplier, catalog), BATCHES)
    resources: dict[str, Any] = {
        "io_manager": WarehouseIOManager(base_dir=str(tmp_path / "warehouse")),
        "warehouse": warehouse,
        "service_config": ServiceConfigResource(override_json=json.dumps({"staleness_ttl": "PT6H"})),
    }
    instance = DagsterInstance.ephemeral()
    materialize([catalog_stub], resources=resources, instance=instance)
    result = materialize(
        [catalog_stub, *assets],
        selection=[offers_key(supplier)],
        resources=resources,
        instance=instance,
        tags={"dagster/asset_partition_range_start": RANGE[0], "dagster/asset_partition_range_end": RANGE[1]},
        raise_on_error=False,
    )
    assert result.success
    metadata = {
        event.partition: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key == offers_key(supplier)
    }
    assert set(metadata) == set(RANGE)
    offered = _cached(supplier, catalog).join(catalog.filter(pl.col("active")), on="sku")
    for batch in RANGE:
        active = catalog.filter(pl.col("active") & (pl.col("batch") == batch)).height
        rows = offered.filter(pl.col("batch") == batch).height
        assert 0 < rows < active
        assert (metadata[batch]["rows"], metadata[batch]["skus"]) == (rows, active)
        assert warehouse.read(offers_key(supplier).path, batch).height == rows
    # batch-001's offers, as written by this run, are two days old: the check says so.
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == FRESH_CHECK]
    assert check.asset_key == AssetKey(offers_key(supplier).path)
    assert not check.passed
    values = {k: v.value for k, v in check.metadata.items()}
    assert (values["batches_on_file"], values["stale_batch_list"]) == (2, "batch-001")
