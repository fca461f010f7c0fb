"""The orders code location: assets, checks, job, schedule, sensor and resources in one Definitions."""

from __future__ import annotations

import warnings
from functools import cache

from dagster import BetaWarning, Definitions, definitions

from orders_assets.schedules import orders_hourly, orders_job
from orders_assets.sensors import orders_late_changes
from resources.orders_db import OrdersDatabase
from resources.warehouse import WarehouseIOManager, WarehouseTables

with warnings.catch_warnings():
    # Only the `backfill_policy` parameter of `@asset` carries a beta marker; BackfillPolicy itself is
    # public and stable, and the same parameter of `@multi_asset` is not marked (docs/decisions.md).
    warnings.filterwarnings("ignore", "Parameter `backfill_policy` of function `asset`", BetaWarning)
    from orders_assets.assets import ORDERS_ASSETS


def build_defs() -> Definitions:
    """Build the orders location: its assets, job, schedule, sensor and resources."""
    return Definitions(
        assets=ORDERS_ASSETS,
        jobs=[orders_job],
        schedules=[orders_hourly],
        sensors=[orders_late_changes],
        resources={
            # Everything resolves its location (WAREHOUSE_DIR, ORDERS_DB_URL) when a run starts.
            "io_manager": WarehouseIOManager(),
            "warehouse": WarehouseTables(),
            "orders_db": OrdersDatabase(),
        },
    )


@definitions
@cache
def defs() -> Definitions:
    """The deployed location, built once when Dagster loads it (workspace.yaml's `defs`)."""
    return build_defs()
