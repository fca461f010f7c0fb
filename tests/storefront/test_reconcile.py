"""Storefront reconciliation: drift found against the ledger, repaired once, through both adapters."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from dagster import (
    AssetMaterialization,
    ExecuteInProcessResult,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from pricing_assets.logic.ledger import SYNC_SCHEMA
from pricing_assets.reconcile import (
    RECONCILE_RUN_CONFIG,
    build_reconcile_job,
    build_reconcile_sensor,
    find_drift,
)
from resources.push_state import MARKS_KEY, PushState
from resources.service_config import ServiceConfigResource
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.warehouse import Warehouse, WarehouseIOManager
from tests.storefront.conftest import (
    BATCHES,
    FAST,
    PRICES_SPEC,
    SECRET,
    SYNC_ASSET,
    read_ledger,
    sync,
    sync_metadata,
    targets,
    write_targets,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def reconcile(warehouse_dir: Path, url: str, *, adapter: str | None = None) -> ExecuteInProcessResult:
    """storefront_sync of batch-000 in reconcile mode, as storefront_reconcile_job runs it."""
    resources = {
        "io_manager": WarehouseIOManager(base_dir=str(warehouse_dir)),
        "warehouse": Warehouse(base_dir=str(warehouse_dir)),
        "push_state": PushState(base_dir=str(warehouse_dir)),
        "service_config": ServiceConfigResource(override_json=json.dumps({})),
        "storefront": Storefront(
            url=f"{url}/storefront", webhook_secret=SECRET, push_adapter=adapter, **FAST
        ),
        "shopify": ShopifyStorefront(shop_url=f"{url}/shopify", **FAST),
    }
    return materialize(
        [SYNC_ASSET, PRICES_SPEC],
        partition_key="batch-000",
        resources=resources,
        run_config=RECONCILE_RUN_CONFIG,
        raise_on_error=False,
    )


def wipe(sandbox) -> None:
    httpx.post(f"{sandbox.url}/_control/storefront_wipe", timeout=10).raise_for_status()


def shown(sandbox) -> dict[str, tuple[Decimal, bool, str | None]]:
    """What the sandbox storefront shows per SKU: price, availability, routed supplier."""
    prices = sandbox.pushes()["prices"]
    return {sku: (Decimal(e["price"]), e["available"], e["supplier"]) for sku, e in prices.items()}


def acknowledged(warehouse_dir: Path) -> dict[str, tuple[Decimal, bool, str | None]]:
    ledger = read_ledger(warehouse_dir).filter(pl.col("acknowledged_at").is_not_null())
    return {
        sku: (price, available, supplier)
        for sku, price, available, supplier in ledger.select(
            "sku", "price", "available", "supplier"
        ).iter_rows()
    }


def applied(sandbox) -> Counter[tuple[str, int]]:
    """How often each (sku, version) was applied by the storefront."""
    return Counter((e["sku"], e["version"]) for p in sandbox.pushes()["pushes"] for e in p["prices"])


def ledger_rows(rows: list[dict[str, Any]]) -> pl.DataFrame:
    base = {name: None for name in SYNC_SCHEMA}
    return pl.DataFrame([{**base, **row} for row in rows], schema=SYNC_SCHEMA)


def test_find_drift_compares_what_the_ledger_acknowledged():
    ack = {"currency": "EUR", "acknowledged_at": NOW, "version": 2}
    ledger = ledger_rows(
        [
            {"sku": "A", "price": Decimal("1.00"), "available": True, "supplier": "alpha", **ack},
            {"sku": "B", "price": Decimal("2.00"), "available": True, "supplier": "alpha", **ack},
            {"sku": "C", "price": Decimal("3.00"), "available": True, "supplier": "alpha", **ack},
            {"sku": "D", "price": Decimal("4.00"), "available": False, "supplier": None, **ack},
            {"sku": "E", "price": Decimal("5.00"), "available": True, "supplier": "alpha", **ack},
            {"sku": "F", "price": None, "available": False, "supplier": None, **ack},  # never had a price
            {
                "sku": "G",
                "price": Decimal("7.00"),
                "available": True,
                "supplier": "beta",
                **ack,
                "pending_status": "in_doubt",
            },
            {
                "sku": "H",
                "price": None,
                "available": None,
                "supplier": None,
                "version": 0,
                "pending_status": "deferred",
            },  # never acknowledged
        ]
    )
    live = pl.DataFrame(
        {
            "sku": ["A", "C", "D", "E", "F", "Z"],
            "price": [
                Decimal("1.0000"),
                Decimal("3.50"),
                Decimal("4.00"),
                Decimal("5.00"),
                Decimal("0"),
                None,
            ],
            "available": [True, True, True, True, False, True],
            "supplier": ["alpha", "alpha", None, "gamma", None, "x"],
        }
    ).with_columns(pl.col("price").cast(pl.Decimal(20, 4)))
    drift = find_drift(ledger, live, NOW)
    assert dict(drift.select("sku", "kind").iter_rows()) == {
        "B": "missing",
        "C": "price",
        "D": "available",
        "E": "supplier",
    }
    assert drift.get_column("version").to_list() == [2, 2, 2, 2]


def test_find_drift_reads_only_the_batchs_skus_and_the_last_row_of_each():
    """Other batches' SKUs in the live frame change nothing; a SKU listed twice is judged by its last row."""
    ack = {"currency": "EUR", "acknowledged_at": NOW, "version": 1, "available": True, "supplier": "alpha"}
    ledger = ledger_rows(
        [{"sku": "A", "price": Decimal("1.00"), **ack}, {"sku": "B", "price": Decimal("2.00"), **ack}]
    )
    live = pl.DataFrame(
        {
            "sku": ["A", "X", "B", "A", "Y", "B"],
            "price": [Decimal("9.00"), Decimal("1"), Decimal("2.00"), Decimal("1.00"), None, Decimal("3")],
            "available": [True, True, True, True, False, True],
            "supplier": ["alpha"] * 6,
        }
    ).with_columns(pl.col("price").cast(pl.Decimal(20, 4)))
    drift = find_drift(ledger, live, NOW)
    assert dict(drift.select("sku", "kind").iter_rows()) == {"B": "price"}


def test_wiped_webhook_storefront_is_repaired_once(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(30))
    assert sync(warehouse_dir, sandbox.url).success
    before = acknowledged(warehouse_dir)
    assert shown(sandbox) == before
    wipe(sandbox)
    result = reconcile(warehouse_dir, sandbox.url)
    assert result.success
    meta = sync_metadata(result)
    assert (meta["skus_checked"], meta["drift_found"], meta["drift_missing"], meta["repaired"]) == (
        30,
        30,
        30,
        30,
    )
    assert meta["pushed"] == 30
    assert shown(sandbox) == acknowledged(warehouse_dir) == before
    assert max(applied(sandbox).values()) == 1
    assert sandbox.pushes()["duplicates"] == 0
    # Nothing left to repair: the next reconciliation pushes nothing.
    again = reconcile(warehouse_dir, sandbox.url)
    assert sync_metadata(again)["drift_found"] == 0 and sync_metadata(again)["requests"] == 0


def test_repair_the_storefront_cannot_take_now_goes_with_the_next_push(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(8))
    assert sync(warehouse_dir, sandbox.url).success
    before = acknowledged(warehouse_dir)
    wipe(sandbox)
    sandbox.control(faults={"storefront": {"status": 503, "retry_after": 0}})
    down = reconcile(warehouse_dir, sandbox.url)
    assert not down.success  # deferred repairs fail the run visibly, like any pending push
    meta = sync_metadata(down)
    assert (meta["drift_found"], meta["repaired"], meta["repair_pending"]) == (8, 0, 8)
    # The ledger still says what the storefront acknowledged; the marks wait for the next sync.
    assert acknowledged(warehouse_dir) == before
    marks = Warehouse(base_dir=str(warehouse_dir)).read(MARKS_KEY, "batch-000")
    assert marks.height == 8

    sandbox.control(faults={"storefront": None})
    plain = sync(warehouse_dir, sandbox.url)  # a normal push, not a reconciliation
    assert plain.success
    assert (sync_metadata(plain)["repaired"], sync_metadata(plain)["repair_pending"]) == (8, 0)
    assert shown(sandbox) == acknowledged(warehouse_dir)
    assert max(applied(sandbox).values()) == 1
    # Repaired marks are void: a further push sends nothing.
    assert sync_metadata(sync(warehouse_dir, sandbox.url))["requests"] == 0


def test_a_held_sku_is_restored_to_what_the_ledger_acknowledged(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(4))
    assert sync(warehouse_dir, sandbox.url).success
    acked = acknowledged(warehouse_dir)["SKU-000001"]
    held = targets(4).with_columns(
        pl.when(pl.col("sku") == "SKU-000001").then(True).otherwise(False).alias("held"),
        pl.when(pl.col("sku") == "SKU-000001")
        .then(pl.col("price") * 3)
        .otherwise(pl.col("price"))
        .alias("price"),
    )
    write_targets(warehouse_dir, held)
    wipe(sandbox)
    assert reconcile(warehouse_dir, sandbox.url).success
    assert shown(sandbox)["SKU-000001"] == acked  # the storefront shows the last approved price
    assert shown(sandbox) == acknowledged(warehouse_dir)


def test_an_unreadable_storefront_fails_the_reconciliation_and_changes_nothing(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(6))
    assert sync(warehouse_dir, sandbox.url).success
    ledger = read_ledger(warehouse_dir)
    sandbox.control(faults={"storefront": {"prices_empty_page_at": 1}})
    result = reconcile(warehouse_dir, sandbox.url)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "cannot read what the storefront shows" in failure.step_failure_data.user_failure_data.description
    assert "ended after 0 of the 6 items" in failure.step_failure_data.user_failure_data.description
    assert read_ledger(warehouse_dir).equals(ledger)


def test_wiped_shopify_is_repaired_once(sandbox, warehouse_dir, shopify_token):
    catalog = Storefront(url=f"{sandbox.url}/storefront", webhook_secret=SECRET).fetch_catalog()
    Warehouse(base_dir=str(warehouse_dir)).write(catalog, ["catalog"])
    write_targets(warehouse_dir, targets(12))
    assert sync(warehouse_dir, sandbox.url, adapter="shopify").success
    updates = sandbox.counters()["shopify.variant_updates"]
    assert updates == 12
    wipe(sandbox)
    result = reconcile(warehouse_dir, sandbox.url, adapter="shopify")
    assert result.success
    meta = sync_metadata(result)
    # A wiped shop still lists its variants, at a price that is not ours.
    assert (meta["drift_found"], meta["drift_price"], meta["repaired"]) == (12, 12, 12)
    assert sandbox.counters()["shopify.variant_updates"] == 24  # each variant updated once more
    variants = httpx.get(f"{sandbox.url}/shopify/_state", timeout=10).json()["variants"]
    assert {sku: (Decimal(v["price"]), v["available"], v["supplier"]) for sku, v in variants.items()} == (
        acknowledged(warehouse_dir)
    )
    assert sync_metadata(reconcile(warehouse_dir, sandbox.url, adapter="shopify"))["drift_found"] == 0


def test_reconcile_sensor_runs_once_per_sweep_period_after_the_first_push():
    now = [1_000_000.0]
    sensor = build_reconcile_sensor(build_reconcile_job(), BATCHES, clock=lambda: now[0])
    resources = {"service_config": ServiceConfigResource(override_json=json.dumps({"sweep_minutes": 2}))}
    with instance_for_test() as instance:

        def tick(cursor: str | None) -> SensorResult | SkipReason:
            return sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))

        assert "never materialized" in tick(None).skip_message
        instance.report_runless_asset_event(AssetMaterialization("storefront_sync", partition="batch-000"))
        first = tick(None)
        (request,) = first.run_requests
        assert request.run_key == f"storefront_reconcile:{1_000_000 // 120}"
        assert request.run_config == RECONCILE_RUN_CONFIG
        assert (
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        ) == (
            "batch-000",
            "batch-001",
        )
        now[0] += 60  # same 2-minute period
        assert isinstance(tick(first.cursor), SkipReason)
        now[0] += 60  # next period
        (later,) = tick(first.cursor).run_requests
        assert later.run_key != request.run_key
