"""Fixtures of the orders tests: a generated orders DB, a warehouse with catalog and price history."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from orders_assets.assets import ORDERS_ASSETS
from orders_assets.schedules import RANGE_END_TAG, RANGE_START_TAG
from pricing_assets.logic.history import day_slice
from resources.orders_db import OrdersDatabase
from resources.schemas import CATALOG_SCHEMA, PRICE_HISTORY_SCHEMA
from resources.warehouse import Warehouse, WarehouseIOManager, write_parquet_atomic
from sandbox.orders_db import generate_orders_db

DAYS = [date(2026, 3, 1), date(2026, 3, 2)]
SKUS = [f"SKU-{i:06d}" for i in range(40)]
SEED = 11
ORDERS_PER_DAY = 160


def ts(text: str) -> datetime:
    """A UTC timestamp from 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snapshot(
    sku: str,
    supplier: str,
    cost: str,
    stock: int | None,
    valid_from: datetime,
    valid_to: datetime | None = None,
    in_stock: bool = True,
) -> dict[str, Any]:
    """One price_history row (price = cost, EUR)."""
    return {
        "sku": sku,
        "supplier": supplier,
        "price": Decimal(cost),
        "currency": "EUR",
        "cost": Decimal(cost),
        "stock": stock,
        "in_stock": in_stock,
        "valid_from": valid_from,
        "valid_to": valid_to,
    }


def price_history_frame(rows: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with exactly PRICE_HISTORY_SCHEMA."""
    return pl.DataFrame(list(rows), schema=PRICE_HISTORY_SCHEMA)


def write_catalog(root: Path, skus: list[str]) -> None:
    """The pricing location's `catalog` table."""
    frame = pl.DataFrame(
        {
            "sku": skus,
            "title": [f"Item {s}" for s in skus],
            "category": ["games"] * len(skus),
            "active": [True] * len(skus),
            "product_id": skus,
            "variant_id": skus,
        },
        schema=CATALOG_SCHEMA,
    )
    Warehouse(base_dir=str(root)).write(frame, ["catalog"])


def write_price_history(root: Path, rows: list[dict[str, Any]], through: date | None = None) -> list[str]:
    """The pricing location's `price_history` as it writes it: per day, every row valid at some instant
    of that day (`day_slice`), from the first valid_from day through `through`; the days written."""
    frame = price_history_frame(rows)
    first = frame.get_column("valid_from").min().date()
    last = max(frame.get_column("valid_from").max().date(), through or first)
    warehouse = Warehouse(base_dir=str(root))
    written = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        part = day_slice(frame, day).with_columns(pl.lit(day.isoformat()).alias("day"))
        write_parquet_atomic(part, warehouse.path(["price_history"], day.isoformat()))
        written.append(day.isoformat())
    return written


def generated_price_history(skus: list[str], days: list[date], seed: int = SEED) -> list[dict[str, Any]]:
    """Three suppliers: alpha cheapest with little stock, beta dearer and scarce, gamma dearest and
    unlimited where in stock; alpha restocks at noon every day, so snapshots change within and across
    days."""
    rng = random.Random(seed)
    rows = []
    start = datetime.combine(days[0] - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    for sku in skus:
        base = Decimal(rng.randrange(100, 5000)) / 100
        rows.append(snapshot(sku, "beta", str(base + Decimal("1.00")), rng.randrange(0, 6), start))
        # A third of the SKUs are out of stock at gamma, so some lines end up backordered.
        rows.append(
            snapshot(sku, "gamma", str(base + Decimal("2.50")), None, start, in_stock=rng.random() > 0.33)
        )
        moments = [start] + [
            datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12) for day in days
        ]
        for i, moment in enumerate(moments):
            end = moments[i + 1] if i + 1 < len(moments) else None
            rows.append(snapshot(sku, "alpha", str(base), rng.randrange(0, 8), moment, end))
    return rows


@pytest.fixture(autouse=True)
def store_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A minimal supplier registry: the orders location only reads its store_currency."""
    path = tmp_path / "registry.yaml"
    path.write_text("store_currency: EUR\nsuppliers: []\n")
    monkeypatch.setenv("SUPPLIER_REGISTRY", str(path))
    return path


@dataclass
class OrdersEnv:
    """A generated orders database plus a warehouse holding the pricing location's inputs."""

    url: str
    warehouse: Path
    injected: dict[str, Any]
    schema: str | None = None

    def resources(self) -> dict[str, Any]:
        """Resources pointing at this database and warehouse."""
        return {
            "io_manager": WarehouseIOManager(base_dir=str(self.warehouse)),
            "warehouse": Warehouse(base_dir=str(self.warehouse)),
            "orders_db": OrdersDatabase(url=self.url, db_schema=self.schema),
        }

    def read(self, key: str, day: str) -> pl.DataFrame:
        """One written partition."""
        return pl.read_parquet(self.warehouse / key / f"{day}.parquet")


def make_env(url: str, warehouse: Path, schema: str | None = None) -> OrdersEnv:
    """Generate the DB at url and the pricing inputs in warehouse."""
    injected = generate_orders_db(
        url, seed=SEED, catalog=SKUS, days=DAYS, orders_per_day=ORDERS_PER_DAY, schema=schema
    )
    write_catalog(warehouse, SKUS)
    write_price_history(warehouse, generated_price_history(SKUS, DAYS), through=DAYS[-1])
    return OrdersEnv(url=url, warehouse=warehouse, injected=injected, schema=schema)


@pytest.fixture
def orders_env(tmp_path: Path, warehouse_dir: Path) -> OrdersEnv:
    """A SQLite orders DB of two days and a warehouse with catalog and price history."""
    return make_env(f"sqlite:///{tmp_path / 'orders.db'}", warehouse_dir)


def run_days(
    env: OrdersEnv, first: str, last: str | None = None, instance: DagsterInstance | None = None
) -> Any:
    """Materialize the orders assets for a day or a range of days in one run."""
    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last} if last else None
    result = materialize(
        ORDERS_ASSETS,
        resources=env.resources(),
        partition_key=None if last else first,
        tags=tags,
        instance=instance,
        selection=["orders", "order_rejects", "order_allocations", "sales_report"],
    )
    assert result.success
    return result
