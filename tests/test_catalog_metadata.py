"""Every asset of both locations carries catalog metadata: description, owners, kinds, group, columns."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    AssetSpec,
    DagsterInstance,
    Definitions,
    TableSchema,
    define_asset_job,
)

from orders_assets import schemas as orders_schemas
from pricing_assets.definitions import build_definitions_without_resources
from pricing_assets.held import HELD_SCHEMA
from pricing_assets.logic.ledger import SYNC_SCHEMA
from resources.config import load_registry
from resources.push_state import APPROVALS_SCHEMA
from resources.schemas import (
    BEST_OFFERS_SCHEMA,
    CATALOG_SCHEMA,
    COLUMN_SCHEMA_KEY,
    OFFER_TABLE_SCHEMA,
    OFFERS_SCHEMA,
    PRICE_HISTORY_SCHEMA,
    QUARANTINE_SCHEMA,
    STOREFRONT_PRICES_SCHEMA,
    table_schema,
)
from resources.warehouse import Warehouse
from tests.pricing.wiring import bind, resources, skus_in_batch, write_offers

# The table each asset writes, written out here independently of the definitions.
BATCH_COLUMN: dict[str, pl.DataType] = {"batch": pl.String()}
BATCHED_OFFERS = {**OFFER_TABLE_SCHEMA, **BATCH_COLUMN}
PRICING_TABLES: dict[str, dict[str, pl.DataType]] = {
    "catalog": {**CATALOG_SCHEMA, **BATCH_COLUMN},
    # The CDN cache: the offers, laid out by catalog batch (the batch and the batch count it is for).
    "supplier_files/delta": {**OFFERS_SCHEMA, **BATCH_COLUMN, "catalog_batches": pl.Int32()},
    **{f"supplier_offers/{s}": BATCHED_OFFERS for s in ("alpha", "beta", "gamma", "delta")},
    # The rows each supplier step rejected: per batch for the REST suppliers, the cached file's for delta.
    **{f"supplier_quarantine/{s}": {**QUARANTINE_SCHEMA, **BATCH_COLUMN} for s in ("alpha", "beta", "gamma")},
    "supplier_files_quarantine/delta": QUARANTINE_SCHEMA,
    "best_offers": {**BEST_OFFERS_SCHEMA, **BATCH_COLUMN},
    # storefront_prices keeps best_offers' columns and adds the price ones.
    "storefront_prices": {**BEST_OFFERS_SCHEMA, **BATCH_COLUMN, **STOREFRONT_PRICES_SCHEMA},
    "storefront_sync": {**SYNC_SCHEMA, **BATCH_COLUMN},
    "price_approvals": APPROVALS_SCHEMA,
    "held_price_changes": HELD_SCHEMA,
    "price_history": {**PRICE_HISTORY_SCHEMA, "day": pl.String()},
}
ORDERS_TABLES: dict[str, dict[str, pl.DataType]] = {
    "orders": orders_schemas.ORDERS_SCHEMA,
    "order_rejects": orders_schemas.ORDER_REJECTS_SCHEMA,
    "order_allocations": orders_schemas.ORDER_ALLOCATIONS_SCHEMA,
    "sales_report": orders_schemas.SALES_REPORT_SCHEMA,
    "sales_summary": orders_schemas.SALES_SUMMARY_SCHEMA,
}
OWNERS = {"pricing": ["team:pricing"], "orders": ["team:orders"]}


def _location_defs(location: str) -> Definitions:
    if location == "pricing":
        from pricing_assets.definitions import build_defs

        return build_defs()
    from orders_assets.definitions import build_defs as build_orders_defs

    return build_orders_defs()


def _defined_specs(defs: Definitions) -> dict[str, AssetSpec]:
    """The location's own assets; the stubs Dagster adds for another location's keys are not its own."""
    return {
        spec.key.to_user_string(): spec
        for spec in defs.resolve_all_asset_specs()
        if not spec.metadata.get("dagster/auto_created_stub_asset")
    }


@pytest.mark.parametrize(("location", "tables"), [("pricing", PRICING_TABLES), ("orders", ORDERS_TABLES)])
def test_every_asset_has_catalog_metadata(location: str, tables: dict[str, dict[str, pl.DataType]]) -> None:
    specs = _defined_specs(_location_defs(location))
    # A new asset without an entry above fails here, so it cannot join the catalog without columns.
    assert set(specs) == set(tables)
    for name, spec in specs.items():
        assert spec.description and spec.description.strip(), name
        assert spec.owners == OWNERS[location], name
        assert spec.kinds and {"polars", "parquet"} <= spec.kinds, name
        assert spec.group_name and spec.group_name != "default", name
        schema = spec.metadata.get(COLUMN_SCHEMA_KEY)
        assert isinstance(schema, TableSchema), name
        assert [(c.name, c.type) for c in schema.columns] == [
            (column, str(dtype)) for column, dtype in tables[name].items()
        ], name


def test_orders_location_reads_pricing_assets_it_does_not_define() -> None:
    """The orders location's stubs are the pricing location's assets, catalogued there."""
    orders = _location_defs("orders")
    stubs = {
        spec.key
        for spec in orders.resolve_all_asset_specs()
        if spec.metadata.get("dagster/auto_created_stub_asset")
    }
    assert stubs == {AssetKey("catalog"), AssetKey("price_history")}
    assert {k.to_user_string() for k in stubs} <= set(_defined_specs(_location_defs("pricing")))


def test_table_schema_keeps_contract_order_and_types() -> None:
    schema = table_schema({"sku": pl.String(), "price": pl.Decimal(20, 4)})
    assert [(c.name, c.type) for c in schema.columns] == [
        ("sku", "String"),
        ("price", "Decimal(precision=20, scale=4)"),
    ]


def test_the_tables_the_pricing_assets_write_have_the_catalogued_columns(
    sandbox: Any, warehouse_dir: Path, tmp_path: Path
) -> None:
    """Materialize the pricing chain (a held change, its approval, today's history); read the files back."""
    registry, batch = load_registry(), "batch-000"
    skus = skus_in_batch(batch, registry.catalog_batches, 3)
    catalog_file = tmp_path / "catalog.csv"
    catalog_file.write_text(
        "sku,title,category,active\n" + "".join(f"{s},Item {s},games,true\n" for s in skus)
    )
    chain = define_asset_job(
        "chain", selection=AssetSelection.assets("best_offers", "storefront_prices", "storefront_sync")
    )
    config = {"markup": {"percent": "15", "rounding": {"mode": "none"}}, "guard": {"max_change_pct": "30"}}
    defs = bind(
        Definitions.merge(build_definitions_without_resources(registry), Definitions(jobs=[chain])),
        resources(warehouse_dir, config=config, storefront_url=f"{sandbox.url}/storefront"),
    )
    instance = DagsterInstance.ephemeral()
    warehouse = Warehouse(base_dir=str(warehouse_dir))

    def run(job: str, **kwargs: object) -> None:
        assert defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs).success, job

    catalog_job = define_asset_job("catalog_only", selection=AssetSelection.assets("catalog"))
    defs = Definitions.merge(defs, Definitions(jobs=[catalog_job]))
    run("catalog_only", run_config={"ops": {"catalog": {"config": {"file": str(catalog_file)}}}})
    write_offers(warehouse, "alpha", batch, dict.fromkeys(skus, "10"))
    run("chain", partition_key=batch)
    write_offers(warehouse, "alpha", batch, {**dict.fromkeys(skus, "10"), skus[0]: "20"})  # +100 %: held
    run("chain", partition_key=batch)
    run("held_price_changes_job")
    run("approve_held_prices", run_config={"ops": {"price_approvals": {"config": {"all": True}}}})
    run("price_history_job", partition_key=datetime.now(UTC).date().isoformat())

    specs = _defined_specs(defs)
    checked = []
    for path in sorted(warehouse_dir.rglob("*.parquet")):
        relative = path.relative_to(warehouse_dir).with_suffix("")
        parts = relative.parts
        # Partitioned tables are <key>/<partition>.parquet; the others <key>.parquet.
        name = "/".join(parts[:-1]) if "/".join(parts[:-1]) in specs else "/".join(parts)
        if name not in specs or name.startswith("supplier_offers/"):  # those files were written above
            continue
        declared = specs[name].metadata[COLUMN_SCHEMA_KEY]
        stored = pl.read_parquet_schema(path)
        assert [(c.name, c.type) for c in declared.columns] == [(n, str(t)) for n, t in stored.items()], name
        checked.append(name)
    assert set(checked) == {
        "catalog",
        "best_offers",
        "storefront_prices",
        "storefront_sync",
        "held_price_changes",
        "price_approvals",
        "price_history",
    }
