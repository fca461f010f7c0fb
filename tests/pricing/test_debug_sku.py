"""debug_sku: one SKU through fetch -> best offer -> price, the same answer as the sweep, writing nothing."""

import json

import polars as pl
from dagster import DagsterInstance

from pricing_assets.debug import DEBUG_JOB_NAME, RESULT_PREFIX, TRACE_OP
from pricing_assets.definitions import build_definitions_without_resources
from resources.config import load_registry
from resources.warehouse import Warehouse
from tests.pricing.wiring import bind, files_snapshot, resources

CONFIG = {"markup": {"percent": "12", "rounding": {"mode": "ending_99"}}}


def trace(defs, instance: DagsterInstance, sku: str):
    result = defs.resolve_job_def(DEBUG_JOB_NAME).execute_in_process(
        instance=instance, run_config={"ops": {TRACE_OP: {"config": {"sku": sku}}}}, raise_on_error=False
    )
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result, messages


def test_debug_sku_matches_the_sweep_and_writes_and_pushes_nothing(sandbox, warehouse_dir):
    registry = load_registry()
    defs = bind(
        build_definitions_without_resources(registry),
        resources(warehouse_dir, config=CONFIG, storefront_url=f"{sandbox.url}/storefront"),
    )
    instance = DagsterInstance.ephemeral()
    assert (
        defs.resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[defs.resolve_assets_def("catalog").key])
        .success
    )
    sweep = defs.resolve_job_def("price_sweep_job").execute_in_process(
        instance=instance, partition_key="batch-003"
    )
    assert sweep.success
    warehouse = Warehouse(base_dir=str(warehouse_dir))
    prices = warehouse.read(["storefront_prices"], "batch-003")
    competitive = prices.filter(pl.col("available") & (pl.col("offer_count") >= 2)).sort("sku")
    expected = competitive.row(0, named=True)

    before = files_snapshot(warehouse_dir)
    sandbox.control(reset=True)  # forget the sweep's requests: only the trace's count from here
    result, messages = trace(defs, instance, expected["sku"])
    assert result.success
    assert files_snapshot(warehouse_dir) == before
    assert sandbox.pushes()["pushes"] == []
    # It fetched live from the REST suppliers (one SKU each), not from the warehouse.
    counters = sandbox.counters()
    assert counters.get("alpha.requests", 0) >= 1 and counters.get("gamma.requests", 0) >= 1

    (line,) = [m for m in messages if m.startswith(RESULT_PREFIX)]
    summary = json.loads(line.removeprefix(RESULT_PREFIX))
    assert summary["sku"] == expected["sku"]
    assert summary["supplier"] == expected["supplier"]
    assert summary["price"] == str(expected["price"])
    assert summary["cost"] == str(expected["cost"])
    assert summary["held"] is False
    # Every intermediate is logged: the catalog row, each offer's candidacy, the best row, markup and guard.
    for needle in [
        "catalog: sku=",
        "-> candidate",
        "best offer: sku=",
        "markup: 12%",
        "floor: cost",
        "guard: ",
    ]:
        assert any(needle in m for m in messages), needle


def test_debug_sku_names_an_unknown_sku(sandbox, warehouse_dir):
    defs = bind(
        build_definitions_without_resources(load_registry()),
        resources(warehouse_dir, storefront_url=f"{sandbox.url}/storefront"),
    )
    instance = DagsterInstance.ephemeral()
    assert (
        defs.resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[defs.resolve_assets_def("catalog").key])
        .success
    )
    result, _ = trace(defs, instance, "NO-SUCH-SKU")
    assert not result.success
    assert "NO-SUCH-SKU" in str(result.failure_data_for_node(TRACE_OP).user_failure_data.description)
