"""Sandbox start-up data: the orders database the demo's orders location reads.

The shop has been trading for DEMO_DAYS UTC days up to now: every order lies in the past (today's
stop at the current second; live ones keep arriving, see sandbox/live_orders.py). The demo backfills
the price history of the same days (sandbox/demo_bootstrap.py), so each day's sales report has costs.
"""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.orders_db import generate_orders_db
from sandbox.world import World

DEMO_DAYS = 7
DEMO_ORDERS_PER_DAY = 300


def demo_days(now: datetime) -> list[date]:
    """The UTC days the demo's orders span, oldest first, ending with the day of `now`."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=offset) for offset in range(DEMO_DAYS - 1, -1, -1)]


def make_orders_db(world: World, path: str, now: datetime | None = None) -> dict[str, Any]:
    """(Re)generate the orders SQLite file for the last DEMO_DAYS UTC days up to `now` (default: now)."""
    now = now or datetime.now(UTC)
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    return generate_orders_db(
        f"sqlite:///{file.resolve()}",
        seed=world.seed,
        catalog=[row["sku"] for row in world.catalog if row["active"]],
        days=demo_days(now),
        orders_per_day=DEMO_ORDERS_PER_DAY,
        until=now,
    )
