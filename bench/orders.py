"""`python -m bench orders`: one day of 1M order lines through orders -> allocations -> sales_report.

Project path: the assets' code minus Dagster's run machinery (the same functions the assets call, in
the same order, including their checks and the warehouse writes): OrdersDatabase.read_window,
validate_orders (with the pandera contract), normalize_snapshots, allocate, the no_oversell and
allocations_match_orders checks, sales_report.
Baseline: a bare polars pipeline doing the same reads, joins and aggregations with the sqlite3 module
and no validation bookkeeping or stock accounting (each line simply takes its cheapest in-stock offer),
writing the same three tables.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from bench._harness import alternate, line, scaled
from orders_assets import allocation, checks, sales, validation
from resources.orders_db import OrdersDatabase
from resources.schemas import MONEY, PRICE_HISTORY_SCHEMA
from resources.warehouse import Warehouse
from sandbox.orders_db import generate_orders_db

NAME = "orders"
TARGET = 1.5
DAY = date(2026, 3, 10)
SEED = 42
SUPPLIERS = (("alpha", Decimal("0.00")), ("beta", Decimal("0.40")), ("gamma", Decimal("0.90")))
LINES_PER_ORDER = 1.73  # the generator's mean (1-4 lines, weighted)


@dataclass(frozen=True)
class BenchData:
    """Where the generated day lives."""

    db: Path
    warehouse: Warehouse
    injected: dict[str, Any]

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the orders DB."""
        return f"sqlite:///{self.db}"


def make_data(folder: Path, lines: int, skus: int = 2000) -> BenchData:
    """The orders DB (SQLite) and a warehouse with catalog and a day of price history, seeded."""
    catalog = [f"SKU-{i:06d}" for i in range(skus)]
    url = f"sqlite:///{folder / 'orders.db'}"
    injected = generate_orders_db(
        url, seed=SEED, catalog=catalog, days=[DAY], orders_per_day=int(lines / LINES_PER_ORDER)
    )
    warehouse = Warehouse(base_dir=str(folder / "warehouse"))
    warehouse.write(pl.DataFrame({"sku": catalog}), ["catalog"])
    rng = random.Random(SEED)
    rows = []
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC) - timedelta(hours=6)
    # Stock snapshots every two hours: alpha cheap and often short, beta unlimited, gamma dearest.
    moments = [start + timedelta(hours=2 * i) for i in range(16)]
    for sku in catalog:
        base = Decimal(rng.randrange(200, 9000)) / 100
        for supplier, extra in SUPPLIERS:
            for i, moment in enumerate(moments):
                stock = None if supplier == "beta" else rng.randrange(0, 120)
                rows.append(
                    {
                        "sku": sku,
                        "supplier": supplier,
                        "price": base + extra,
                        "currency": "EUR",
                        "cost": base + extra,
                        "stock": stock,
                        "in_stock": supplier != "beta" or rng.random() > 0.3,
                        "valid_from": moment,
                        "valid_to": moments[i + 1] if i + 1 < len(moments) else None,
                    }
                )
    history = pl.DataFrame(rows, schema=PRICE_HISTORY_SCHEMA)
    warehouse.write(history, ["price_history"], DAY.isoformat())
    return BenchData(db=folder / "orders.db", warehouse=warehouse, injected=injected)


def project(data: BenchData, out: Warehouse) -> int:
    """The assets' code path for one day, minus Dagster."""
    warehouse = data.warehouse
    db = OrdersDatabase(url=data.url)
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    raw = db.read_window(start, start + timedelta(days=1))
    validated = validation.validate_orders(
        raw.orders,
        raw.lines,
        known_skus=warehouse.read(["catalog"]).get_column("sku"),
        store_currency="EUR",
        fallback_day=DAY.isoformat(),
    )
    checks.ingested_balance(validated.ingested, validated.accepted, validated.rejects)
    out.write(validated.accepted, ["orders"], DAY.isoformat())
    out.write(validated.rejects, ["order_rejects"], DAY.isoformat())
    snapshots = allocation.normalize_snapshots(warehouse.read_partitions(["price_history"]))
    allocations = allocation.allocate(validated.accepted, snapshots, allocation.consumed_units(None))
    assert checks.no_oversell(allocations, snapshots).passed
    assert checks.allocations_match_orders(allocations, validated.accepted).passed
    out.write(allocations, ["order_allocations"], DAY.isoformat())
    report = sales.sales_report(allocations)
    out.write(report, ["sales_report"], DAY.isoformat())
    db.dispose()
    return report.height


def _fetch(con: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> pl.DataFrame:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return pl.DataFrame(cursor.fetchall(), schema=names, orient="row", infer_schema_length=None)


def baseline(data: BenchData, out: Path) -> int:
    """Bare polars over sqlite3: same reads, joins and aggregations, cheapest offer per line."""
    con = sqlite3.connect(str(data.db))
    lo, hi = f"{DAY} 00:00:00", f"{DAY + timedelta(days=1)} 00:00:00"
    orders = _fetch(
        con,
        "SELECT id, customer_id, status, currency, created_at, updated_at, payment_method FROM orders "
        "WHERE created_at >= ? AND created_at < ?",
        (lo, hi),
    )
    # The same read of the lines as the project's: by order-id range, orphans dropped by the join.
    lines = _fetch(
        con,
        "SELECT order_id, sku, quantity, CAST(unit_price AS TEXT) AS unit_price FROM order_items "
        "WHERE order_id >= ? AND order_id <= ?",
        (orders.get_column("id").min(), orders.get_column("id").max()),
    )
    con.close()
    ts = "%Y-%m-%d %H:%M:%S%.f"
    orders = orders.with_columns(
        pl.col("created_at").str.to_datetime(ts, time_zone="UTC"),
        pl.col("updated_at").str.to_datetime(ts, time_zone="UTC"),
    )
    catalog = pl.read_parquet(out.parent / "warehouse" / "catalog.parquet").get_column("sku")
    accepted = (
        lines.with_columns(pl.col("unit_price").str.to_decimal(scale=4).cast(MONEY))
        .join(orders, left_on="order_id", right_on="id")
        .filter(
            pl.col("sku").is_in(catalog.implode())
            & (pl.col("quantity") > 0)
            & (pl.col("unit_price") >= 0)
            & (pl.col("currency") == "EUR")
        )
        .unique(["order_id", "sku"], keep="first")
        .sort(["created_at", "order_id", "sku"])
        .with_columns(pl.lit(DAY.isoformat()).alias("day"))
    )
    accepted.write_parquet(out / "orders.parquet", compression="zstd")
    history = pl.read_parquet(out.parent / "warehouse" / "price_history" / f"{DAY}.parquet").sort(
        "valid_from"
    )
    offers = []
    left = accepted.select("order_id", "sku", "created_at").with_row_index("line").sort("created_at")
    for supplier, _ in SUPPLIERS:
        joined = left.join_asof(
            history.filter(pl.col("supplier") == supplier),
            left_on="created_at",
            right_on="valid_from",
            by="sku",
            check_sortedness=False,
        )
        offers.append(joined.filter(pl.col("in_stock") & (pl.col("stock").is_null() | (pl.col("stock") > 0))))
    cheapest = (
        pl.concat(offers)
        .sort(["line", "cost", "supplier"])
        .unique("line", keep="first")
        .select("line", "supplier", pl.col("cost").alias("unit_cost"))
    )
    allocations = accepted.with_row_index("line").join(cheapest, on="line", how="left")
    allocations.write_parquet(out / "order_allocations.parquet", compression="zstd")
    report = (
        allocations.filter(pl.col("supplier").is_not_null() & pl.col("status").is_in(["placed", "paid"]))
        .group_by("day", "sku", "supplier")
        .agg(
            pl.col("order_id").n_unique().alias("orders"),
            pl.col("quantity").sum().alias("units"),
            (pl.col("quantity") * pl.col("unit_price")).sum().alias("revenue"),
            (pl.col("quantity") * pl.col("unit_cost")).sum().alias("cost"),
        )
        .with_columns((pl.col("revenue") - pl.col("cost")).alias("margin"))
        .sort(["day", "sku", "supplier"])
    )
    report.write_parquet(out / "sales_report.parquet", compression="zstd")
    return report.height


def run() -> str:
    """Generate the day, time both paths alternately, and return the docs/architecture.md §10 line."""
    lines = scaled(1_000_000, minimum=2_000)
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        folder = Path(tmp)
        data = make_data(folder, lines, skus=scaled(2000, minimum=100))
        project_out = Warehouse(base_dir=str(folder / "project"))
        baseline_out = folder / "baseline"
        baseline_out.mkdir()
        timing = alternate(
            lambda: project(data, project_out), lambda: baseline(data, baseline_out), repeats=3
        )
        allocations = pl.read_parquet(project_out.path(["order_allocations"], DAY.isoformat()))
        states = dict(allocations.group_by("allocation").len().iter_rows())
    injected = data.injected
    detail = (
        f"{injected['lines']:,} lines ({states.get('backordered', 0):,} backordered): "
        f"project median {timing.project:.2f}s, bare polars median {timing.baseline:.2f}s"
    )
    return line(NAME, timing.ratio, TARGET, detail)


if __name__ == "__main__":
    print(run())
