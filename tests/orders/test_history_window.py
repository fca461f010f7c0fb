"""order_allocations reads only the price_history partitions its days can need (not every day of it)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from orders_assets.assets import history_window
from resources.warehouse import Warehouse
from tests.orders.conftest import DAYS, OrdersEnv, run_days

DAY1, DAY2 = (d.isoformat() for d in DAYS)


def spoil_history(warehouse: Path, keep: set[str], extra_days: int = 60) -> list[str]:
    """Make every price_history file but `keep` unreadable, adding `extra_days` older ones."""
    folder = warehouse / "price_history"
    oldest = min(date.fromisoformat(p.stem) for p in folder.glob("*.parquet"))
    for offset in range(1, extra_days + 1):
        (folder / f"{(oldest - timedelta(days=offset)).isoformat()}.parquet").write_bytes(b"not parquet")
    spoiled = []
    for path in folder.glob("*.parquet"):
        if path.stem not in keep:
            path.write_bytes(b"not parquet")
            spoiled.append(path.stem)
    return sorted(spoiled)


def test_a_day_reads_its_own_history_partition_only(orders_env: OrdersEnv) -> None:
    run_days(orders_env, DAY1)
    run_days(orders_env, DAY2)
    expected = orders_env.read("order_allocations", DAY2)
    # Every other day of history is now unreadable, and there are 60 more of them: a read would fail.
    spoiled = spoil_history(orders_env.warehouse, keep={DAY2})
    assert len(spoiled) > 60
    result = run_days(orders_env, DAY2)
    (event,) = result.asset_materializations_for_node("order_allocations")
    assert event.metadata["price_history_read"].value == DAY2
    assert orders_env.read("order_allocations", DAY2).equals(expected)


def test_a_run_over_two_days_reads_those_two_days(orders_env: OrdersEnv) -> None:
    spoil_history(orders_env.warehouse, keep={DAY1, DAY2})
    result = run_days(orders_env, DAY1, DAY2)
    reads = {
        e.partition: e.metadata["price_history_read"].value
        for e in result.asset_materializations_for_node("order_allocations")
    }
    assert reads == {DAY1: DAY1, DAY2: DAY2}


def test_a_day_without_its_partition_reads_the_latest_earlier_one(tmp_path: Path) -> None:
    warehouse = Warehouse(base_dir=str(tmp_path))
    folder = tmp_path / "price_history"
    folder.mkdir()
    for day in ("2026-03-01", "2026-03-02", "2026-03-05"):
        (folder / f"{day}.parquet").write_bytes(b"")
    assert history_window(warehouse, ["2026-03-02", "2026-03-04", "2026-03-05", "2026-02-27"]) == {
        "2026-03-02": "2026-03-02",
        "2026-03-04": "2026-03-02",  # no observation on 03-03 or 03-04: what was open on 03-02 held
        "2026-03-05": "2026-03-05",
        "2026-02-27": None,
    }
