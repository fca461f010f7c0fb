"""The orders code location: assets, checks, job, schedule, sensor and resources in one Definitions."""

from __future__ import annotations

from dagster import Definitions

from orders_assets.assets import ORDERS_ASSETS
from orders_assets.schedules import orders_hourly, orders_job
from orders_assets.sensors import orders_late_changes
from resources.orders_db import OrdersDatabase
from resources.warehouse import Warehouse, WarehouseIOManager

defs = Definitions(
    assets=ORDERS_ASSETS,
    jobs=[orders_job],
    schedules=[orders_hourly],
    sensors=[orders_late_changes],
    resources={
        # Everything resolves its location (WAREHOUSE_DIR, ORDERS_DB_URL) when a run starts.
        "io_manager": WarehouseIOManager(),
        "warehouse": Warehouse(),
        "orders_db": OrdersDatabase(),
    },
)
