"""Column contracts of the warehouse tables that more than one module reads or writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl
from dagster import TableColumn, TableSchema

# Money is exact: prices and costs are fixed-point decimals, never floats.
MONEY = pl.Decimal(20, 4)
# FX rates need more digits than money does.
RATE = pl.Decimal(20, 8)
UTC_TS = pl.Datetime("us", "UTC")

# Definition metadata the Dagster UI reads an asset's columns from, before anything has run.
COLUMN_SCHEMA_KEY = "dagster/column_schema"

# supplier_offers/<supplier>: one row per SKU a supplier offers (docs/architecture.md §3, docs/warehouse.md).
OFFERS_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "supplier": pl.String(),
    "price": MONEY,  # in the supplier's currency
    "currency": pl.String(),  # ISO 4217
    "stock": pl.Int64(),  # null when the supplier does not say how many
    "in_stock": pl.Boolean(),
    "fetched_at": UTC_TS,
}

# The stored supplier_offers/<supplier> tables also carry each offer's row within its catalog batch,
# taken from the join to the batch catalog that ingest makes anyway: best_offers places offers by it
# instead of hashing every SKU again (docs/decisions.md, "Offers carry their catalog row").
CATALOG_ROW = "catalog_row"
OFFER_TABLE_SCHEMA: dict[str, pl.DataType] = {**OFFERS_SCHEMA, CATALOG_ROW: pl.UInt32()}

# Rows that failed validation, with the reason; every quarantine table carries these columns.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "supplier": pl.String(),
    "sku": pl.String(),
    "reason": pl.String(),
    "raw": pl.String(),  # the offending record as JSON, for a human to read
    "fetched_at": UTC_TS,
}

# catalog: the SKUs to price.
CATALOG_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "title": pl.String(),
    "category": pl.String(),
    "active": pl.Boolean(),
    "product_id": pl.String(),  # storefront product (Shopify adapter groups variants by it)
    "variant_id": pl.String(),
}

# best_offers/<batch>: one row per active catalog SKU of the batch.
BEST_OFFERS_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "category": pl.String(),
    "available": pl.Boolean(),
    "supplier": pl.String(),  # null when unavailable
    "cost": MONEY,  # chosen offer converted to the store currency
    "supplier_price": MONEY,  # chosen offer in the supplier's currency
    "supplier_currency": pl.String(),
    "stock": pl.Int64(),
    "runner_up_supplier": pl.String(),
    "runner_up_cost": MONEY,
    "offer_count": pl.Int64(),
    "spread": MONEY,  # runner_up_cost - cost, null with fewer than two offers
}

# storefront_prices/<batch>: the price the storefront should show.
STOREFRONT_PRICES_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "available": pl.Boolean(),
    "supplier": pl.String(),
    "cost": MONEY,
    "price": MONEY,  # store currency, after markup, rounding and floor
    "currency": pl.String(),
    "last_pushed_price": MONEY,
    "change_pct": pl.Float64(),  # informational only, never used for money
    "held": pl.Boolean(),
    "hold_reason": pl.String(),
}

# price_history/<day>: one row per change of an offer's price or stock (valid_from/valid_to).
PRICE_HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "supplier": pl.String(),
    "price": MONEY,  # supplier currency
    "currency": pl.String(),
    "cost": MONEY,  # store currency at the time it was seen
    "stock": pl.Int64(),
    "in_stock": pl.Boolean(),
    "valid_from": UTC_TS,
    "valid_to": UTC_TS,  # null while still current
}


def table_schema(contract: Mapping[str, pl.DataType]) -> TableSchema:
    """A contract as a Dagster TableSchema: each column's name and polars type, in contract order."""
    return TableSchema(columns=[TableColumn(name=name, type=str(dtype)) for name, dtype in contract.items()])


def column_schema(
    contract: Mapping[str, pl.DataType], *, partition_column: str | None = None
) -> dict[str, TableSchema]:
    """Definition metadata giving an asset its stored table's columns, before anything has run.

    A partitioned table's files also carry the partition key ("batch" or "day", a string) after the
    contract's columns: the warehouse IO manager adds it when a frame lacks it and splits on it.
    """
    columns = {**contract, partition_column: pl.String()} if partition_column else contract
    return {COLUMN_SCHEMA_KEY: table_schema(columns)}


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame with exactly the given columns and types."""
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType], extra: Sequence[str] = ()) -> pl.DataFrame:
    """Select and cast a frame to a contract (then `extra` columns as they are); a missing one is an error."""
    missing = [name for name in [*schema, *extra] if name not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing contract columns: {', '.join(missing)}")
    return frame.select([*(pl.col(name).cast(dtype) for name, dtype in schema.items()), *extra])


def conform_filling(
    frame: pl.DataFrame, schema: dict[str, pl.DataType], defaults: dict[str, object] | None = None
) -> pl.DataFrame:
    """Like conform, but a missing column is added with its default (null unless given)."""
    missing = [
        pl.lit((defaults or {}).get(name), dtype=dtype).alias(name)
        for name, dtype in schema.items()
        if name not in frame.columns
    ]
    return conform(frame.with_columns(missing) if missing else frame, schema)
