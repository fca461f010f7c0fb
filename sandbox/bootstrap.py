"""Sandbox start-up data: the orders database the demo's orders location reads."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.orders_db import generate_orders_db
from sandbox.world import World

DEMO_DAYS = 7
DEMO_ORDERS_PER_DAY = 300


def make_orders_db(world: World, path: str) -> dict[str, Any]:
    """(Re)generate the orders SQLite file for the last DEMO_DAYS UTC days from the world's catalog."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=offset) for offset in range(DEMO_DAYS - 1, -1, -1)]
    return generate_orders_db(
        f"sqlite:///{file.resolve()}",
        seed=world.seed,
        catalog=[row["sku"] for row in world.catalog if row["active"]],
        days=days,
        orders_per_day=DEMO_ORDERS_PER_DAY,
    )
