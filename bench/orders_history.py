"""`python -m bench orders_history`: a day's allocation with 7 and with 365 days of price history.

The `order_allocations` asset materialized for one day (a real in-process run: history window,
snapshots, lookback, allocation, both checks, the Parquet write), once over a warehouse holding 7 days of
`price_history` and once over one holding 365. Both histories are generated the same way (2000 SKUs x
3 suppliers, 15 % of offers changing each day, seeded), written as the pricing location writes them
(per day, every offer valid during that day). Ratio = median time with 365 days / median time with 7
days, measured in the same run, alternating: a bounded read keeps it near 1 however long the history
grows. The detail also times what reading every partition (the old unbounded read) would cost.
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
from dagster import AssetSpec, DagsterInstance, materialize

from bench._harness import alternate, line, scaled
from orders_assets import allocation
from orders_assets.assets import order_allocations
from orders_assets.partitions import daily_partitions
from pricing_assets.logic.history import day_slice
from resources.schemas import MONEY, PRICE_HISTORY_SCHEMA, UTC_TS
from resources.warehouse import Warehouse, WarehouseIOManager

NAME = "orders_history"
TARGET = 1.2
DAY = date(2026, 6, 30)  # a past day: partitions exist up to today
SEED = 17
SUPPLIERS = ("alpha", "beta", "gamma")
CHANGE_SHARE = 0.15
# The ingested orders the allocation reads, already in the warehouse (not part of what is timed).
ORDERS_SPEC = AssetSpec("orders", partitions_def=daily_partitions)


def history_rows(skus: list[str], days: int) -> pl.DataFrame:
    """A change log ending on DAY: every offer opens on the first day, 15 % change each day after."""
    rng = random.Random(f"{SEED}:{days}")
    first = datetime.combine(DAY - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC)
    rows: list[tuple] = []
    for sku in skus:
        base = Decimal(rng.randrange(200, 9000)) / 100
        for rank, supplier in enumerate(SUPPLIERS):
            moments = [first] + [
                first + timedelta(days=day, seconds=rng.randrange(86_400))
                for day in range(1, days)
                if rng.random() < CHANGE_SHARE
            ]
            for i, moment in enumerate(moments):
                cost = base + Decimal(rank) / 2 + Decimal(rng.randrange(-50, 50)) / 100
                stock = None if supplier == "gamma" else rng.randrange(0, 80)
                end = moments[i + 1] if i + 1 < len(moments) else None
                rows.append((sku, supplier, cost, "EUR", cost, stock, True, moment, end))
    return pl.DataFrame(rows, schema=PRICE_HISTORY_SCHEMA, orient="row")


def write_history(warehouse: Warehouse, history: pl.DataFrame, days: int) -> None:
    """Per day, the rows valid during it: what `price_history/<day>` holds."""
    for offset in range(days):
        day = DAY - timedelta(days=offset)
        part = day_slice(history, day).with_columns(pl.lit(day.isoformat()).alias("day"))
        warehouse.write(part, ["price_history"], day.isoformat())


def day_orders(skus: list[str], lines: int) -> pl.DataFrame:
    """Accepted order lines of DAY (the `orders` table the allocation reads)."""
    rng = random.Random(f"{SEED}:orders")
    start = datetime.combine(DAY, datetime.min.time(), tzinfo=UTC)
    rows = []
    for order_id in range(1, lines + 1):
        created = start + timedelta(seconds=rng.randrange(86_400))
        rows.append(
            {
                "day": DAY.isoformat(),
                "order_id": order_id,
                "customer_id": f"c{rng.randrange(5000)}",
                "status": "paid" if rng.random() < 0.9 else "cancelled",
                "currency": "EUR",
                "payment_method": "card",
                "created_at": created,
                "updated_at": created,
                "sku": skus[rng.randrange(len(skus))],
                "quantity": rng.randrange(1, 4),
                "unit_price": Decimal(rng.randrange(300, 9900)) / 100,
            }
        )
    frame = pl.DataFrame(rows).with_columns(
        pl.col("created_at").cast(UTC_TS), pl.col("updated_at").cast(UTC_TS), pl.col("unit_price").cast(MONEY)
    )
    return frame.sort("created_at", "order_id", "sku")


def allocate_day(warehouse: Warehouse, instance: DagsterInstance) -> int:
    """Materialize order_allocations for DAY (its orders already in the warehouse); allocated lines."""
    resources = {"warehouse": warehouse, "io_manager": WarehouseIOManager(base_dir=warehouse.base_dir)}
    result = materialize(
        [order_allocations, ORDERS_SPEC],
        selection=[order_allocations],
        partition_key=DAY.isoformat(),
        resources=resources,
        instance=instance,
    )
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())
    allocations = warehouse.read(["order_allocations"], DAY.isoformat())
    return allocations.filter(pl.col("allocation") == "allocated").height


def unbounded_read(warehouse: Warehouse) -> float:
    """Seconds to read and normalize every history partition (what the asset did before)."""
    started = time.perf_counter()
    allocation.normalize_snapshots(warehouse.read_partitions(["price_history"]))
    return time.perf_counter() - started


def run() -> str:
    """Generate both histories, time the day's allocation over each alternately, return the line."""
    skus = [f"SKU-{i:06d}" for i in range(scaled(2000, minimum=50))]
    orders = day_orders(skus, scaled(100_000, minimum=500))
    with tempfile.TemporaryDirectory(prefix="bench-orders-history-") as tmp:
        short = Warehouse(base_dir=str(Path(tmp) / "short"))
        long = Warehouse(base_dir=str(Path(tmp) / "long"))
        instance = DagsterInstance.ephemeral()
        for warehouse, days in ((short, 7), (long, 365)):
            write_history(warehouse, history_rows(skus, days), days)
            warehouse.write(orders, ["orders"], DAY.isoformat())
            assert allocate_day(warehouse, instance) > 0
        timing = alternate(
            lambda: allocate_day(long, instance), lambda: allocate_day(short, instance), repeats=7
        )
        everything = unbounded_read(long)
        files = len(list((Path(tmp) / "long" / "price_history").glob("*.parquet")))
    detail = (
        f"{orders.height:,} lines, {len(skus):,} SKUs x {len(SUPPLIERS)} suppliers: median "
        f"{timing.project:.3f}s with {files} days of history, {timing.baseline:.3f}s with 7; "
        f"reading all {files} partitions instead would add {everything:.2f}s"
    )
    return line(NAME, timing.ratio, TARGET, detail)


if __name__ == "__main__":
    print(run())
