"""One writer per table: after a full cycle against the sandbox, every file under WAREHOUSE_DIR belongs
to exactly one asset key of the two locations or to one state resource's documented folder.

The cycle is the product as it runs: the CDN file refresh, the price_sweep sensor's run (sweep, push and
reconcile in one run), the push sensor, price history, the held table and an approval, and the orders
location's day. A side file some code writes beside the asset tables fails this test, naming it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    Definitions,
    build_sensor_context,
    materialize,
)

from orders_assets.assets import ORDERS_ASSETS
from pricing_assets.definitions import build_definitions_without_resources
from pricing_assets.held import APPROVE_JOB_NAME, HELD_JOB_NAME
from pricing_assets.history_assets import HISTORY_JOB_NAME
from pricing_assets.push_sensor import SYNC_JOB_NAME
from pricing_assets.sweep import CYCLE_JOB_NAME
from resources import cdn_state, push_state
from resources.config import load_registry
from resources.orders_db import OrdersDatabase
from resources.service_config import ServiceConfigResource
from resources.warehouse import Warehouse, WarehouseIOManager
from sandbox.orders_db import generate_orders_db
from tests.pricing.wiring import bind, resources

pytestmark = pytest.mark.slow

BATCHES = 4
# The orders location's daily partitions: today's, which price history has just recorded.
ORDERS_ASSETS_PARTITIONED = ["orders", "order_rejects", "order_allocations", "sales_report"]


def state_folders() -> dict[str, str]:
    """Each documented state folder (first path segment) and the resource that owns it."""
    return {
        **{folder: "PushState" for folder in push_state.STATE_FOLDERS},
        cdn_state.STATE_FOLDER: "CdnCacheState",
    }


def owners_of(relative: str, assets: dict[AssetKey, AssetsDefinition]) -> list[str]:
    """Every asset key or state folder a warehouse file belongs to (exactly one is the contract)."""
    parts = relative.split("/")
    found = [f"state:{parts[0]} ({state_folders()[parts[0]]})"] if parts[0] in state_folders() else []
    for key, definition in assets.items():
        prefix = "/".join(key.path)
        partitions = definition.partitions_def
        if partitions is None:
            if relative == f"{prefix}.parquet":
                found.append(key.to_user_string())
            continue
        folder, _, name = relative.rpartition("/")
        partition = name.removesuffix(".parquet")
        if folder == prefix and name.endswith(".parquet") and partition in partitions.get_partition_keys():
            found.append(key.to_user_string())
    return found


def all_assets(*locations: Definitions) -> dict[AssetKey, AssetsDefinition]:
    """Every materializable asset key of the locations, with the definition that writes it."""
    out: dict[AssetKey, AssetsDefinition] = {}
    for defs in locations:
        graph = defs.resolve_asset_graph()
        for key in graph.get_all_asset_keys():
            if graph.get(key).is_materializable:
                out[key] = defs.resolve_assets_def(key)
    return out


def run(defs: Definitions, instance: DagsterInstance, job: str, **kwargs: object) -> None:
    """Execute a job of the location in process; it must succeed."""
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    assert result.success, job


def test_every_warehouse_file_belongs_to_one_asset_or_one_state_folder(
    sandbox, warehouse_dir: Path, tmp_path: Path
) -> None:
    registry = load_registry().model_copy(update={"catalog_batches": BATCHES})
    bound = resources(warehouse_dir, storefront_url=f"{sandbox.url}/storefront")
    pricing = bind(build_definitions_without_resources(registry), bound)
    instance = DagsterInstance.ephemeral()
    assert (
        pricing.resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[AssetKey("catalog")])
        .success
    )
    run(pricing, instance, "supplier_files_job")
    # The sweep sensor's run: sweep, push and reconcile of every batch, as the daemon launches it.
    sweeper = pricing.resolve_sensor_def("price_sweep")
    sensor_resources = {"service_config": ServiceConfigResource()}
    (request,) = sweeper(build_sensor_context(instance=instance, resources=sensor_resources)).run_requests
    run(pricing, instance, CYCLE_JOB_NAME, tags=dict(request.tags), run_config=request.run_config)
    pushed = pricing.resolve_sensor_def("storefront_push")(
        build_sensor_context(instance=instance, cursor=None, definitions=pricing)
    )
    for push in getattr(pushed, "run_requests", None) or []:
        run(pricing, instance, SYNC_JOB_NAME, tags=dict(push.tags), partition_key=push.partition_key)
    today = datetime.now(UTC).date()
    run(pricing, instance, HISTORY_JOB_NAME, partition_key=today.isoformat())
    run(pricing, instance, HELD_JOB_NAME)
    approve = {"ops": {"price_approvals": {"config": {"all": True}}}}
    run(pricing, instance, APPROVE_JOB_NAME, run_config=approve)

    # The orders location's day, over the same warehouse.
    skus = pl.read_parquet(warehouse_dir / "catalog.parquet").get_column("sku").to_list()
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    generate_orders_db(url, seed=3, catalog=skus[:40], days=[today], orders_per_day=20)
    orders_resources = {
        "io_manager": WarehouseIOManager(base_dir=str(warehouse_dir)),
        "warehouse": Warehouse(base_dir=str(warehouse_dir)),
        "orders_db": OrdersDatabase(url=url),
    }
    orders = Definitions(assets=ORDERS_ASSETS, resources=orders_resources)
    assets = list(ORDERS_ASSETS)
    partitioned = materialize(
        assets,
        resources=orders_resources,
        partition_key=today.isoformat(),
        selection=ORDERS_ASSETS_PARTITIONED,
        instance=instance,
        raise_on_error=False,
    )
    assert partitioned.success
    summary = materialize(assets, resources=orders_resources, selection=["sales_summary"], instance=instance)
    assert summary.success

    keys = all_assets(pricing, orders)
    files = sorted(p.relative_to(warehouse_dir).as_posix() for p in warehouse_dir.rglob("*") if p.is_file())
    # The cycle wrote what it should: the state folders are exercised, not vacuously empty.
    assert any(name.startswith("_journal/") for name in files)
    assert any(name.startswith("supplier_offers/") for name in files)
    assert any(name.startswith("sales_report/") for name in files)
    owners = {name: owners_of(name, keys) for name in files}
    wrong = {name: found for name, found in owners.items() if len(found) != 1}
    assert not wrong, f"files owned by no asset or state folder, or by several: {wrong}"
