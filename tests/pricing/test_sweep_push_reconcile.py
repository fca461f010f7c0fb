"""The live flow in one instance: a ranged sweep, the push it triggers, per-partition metadata, and the
reconciliation that repairs a storefront that lost its state.

The sweep runs over every batch in one run (the sweep sensor's default), the push sensor is
evaluated against the same instance, and the run it requests is executed with that request's tags,
as the daemon would launch it. Metadata is read back from the instance, the way the UI reads it.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
)

from pricing_assets.partitions import offers_key
from pricing_assets.push_sensor import SYNC_JOB_NAME
from pricing_assets.reconcile import RECONCILE_JOB_NAME, RECONCILE_RUN_CONFIG, RECONCILE_SENSOR_NAME
from pricing_assets.sweep import CYCLE_JOB_NAME, RANGE_END_TAG, RANGE_START_TAG
from resources.service_config import ServiceConfigResource
from tests.pricing.wiring import pricing_with_catalog

BATCHES = 16
CONFIG = {"suppliers": {"gamma": {"enabled": False}}}  # two live suppliers keep the test fast


@pytest.fixture
def flow(sandbox, warehouse_dir):
    """Pricing definitions over 16 batches bound to the sandbox, an instance, and the catalog loaded."""
    defs, instance = pricing_with_catalog(
        warehouse_dir, batches=BATCHES, config=CONFIG, storefront_url=f"{sandbox.url}/storefront"
    )
    keys = defs.resolve_job_def("price_sweep_job").partitions_def.get_partition_keys()
    return defs, instance, keys


def sweep(defs, instance, keys: list[str]) -> str:
    """One sweep run over every batch, as the price_sweep sensor launches it; its run id."""
    tags = {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}
    result = defs.resolve_job_def("price_sweep_job").execute_in_process(instance=instance, tags=tags)
    assert result.success
    return result.run_id


def launch(defs, instance, job_name: str, request) -> Any:
    """Execute a sensor's run request in process, with its tags (the range) and run key."""
    tags = {**request.tags, "dagster/run_key": request.run_key}
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance,
        tags=tags,
        partition_key=request.partition_key,
        run_config=request.run_config or None,
        raise_on_error=False,
    )


def partition_metadata(instance, key: AssetKey, partition: str) -> dict[str, Any]:
    """The newest materialization metadata of one partition, as the instance stores it."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return {name: value.value for name, value in records[0].asset_materialization.metadata.items()}


def test_sweep_push_and_per_partition_metadata(flow, warehouse_dir, sandbox):
    defs, instance, keys = flow
    sweep_run = sweep(defs, instance, keys)

    # Two partitions of the one ranged run carry different, correct numbers: each its own.
    tables = {
        offers_key("alpha"): "supplier_offers/alpha",
        offers_key("beta"): "supplier_offers/beta",
        AssetKey("best_offers"): "best_offers",
        AssetKey("storefront_prices"): "storefront_prices",
    }
    for key, folder in tables.items():
        seen = []
        for batch in ("batch-000", "batch-001"):
            metadata = partition_metadata(instance, key, batch)
            frame = pl.read_parquet(warehouse_dir / folder / f"{batch}.parquet")
            assert metadata["rows"] == frame.height, (folder, batch)
            assert metadata["path"].endswith(f"{folder}/{batch}.parquet")
            seen.append(metadata)
        assert seen[0]["rows"] != seen[1]["rows"], folder
    catalog = pl.read_parquet(warehouse_dir / "catalog.parquet")
    per_batch = dict(catalog.filter(pl.col("active")).group_by("batch").len().iter_rows())
    total_skus = 0
    for batch in keys:
        offers = partition_metadata(instance, offers_key("alpha"), batch)
        assert offers["skus"] == per_batch.get(batch, 0)
        prices = partition_metadata(instance, AssetKey("storefront_prices"), batch)
        assert (
            prices["skus"] == pl.read_parquet(warehouse_dir / "storefront_prices" / f"{batch}.parquet").height
        )
        total_skus += offers["skus"]
    assert total_skus == sum(per_batch.values())  # the parts add up; none shows the range's total
    # best_offers counts each batch's supplier offers on file: that batch's files, not the range's.
    considered = []
    for batch in ("batch-000", "batch-001"):
        stored = sum(
            pl.read_parquet(f).height for f in (warehouse_dir / "supplier_offers").glob(f"*/{batch}.parquet")
        )
        considered.append(partition_metadata(instance, AssetKey("best_offers"), batch)["offers_considered"])
        assert considered[-1] == stored > 0, batch
    assert considered[0] != considered[1]

    # The push sensor requests one sync run for the sweep's 16 batches.
    push = defs.resolve_sensor_def("storefront_push")
    result = push(build_sensor_context(instance=instance, cursor=None, definitions=defs))
    assert isinstance(result, SensorResult)
    (request,) = result.run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (keys[0], keys[-1])
    assert request.tags["storefront/trigger_run_id"] == sweep_run
    synced = launch(defs, instance, SYNC_JOB_NAME, request)
    assert synced.success
    # A re-evaluated tick from the old cursor asks for the same key; from the new one, nothing.
    again = push(build_sensor_context(instance=instance, cursor=None, definitions=defs))
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    assert isinstance(
        push(build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs)), SkipReason
    )

    sync_runs = instance.get_runs()
    assert sum(1 for run in sync_runs if run.job_name == SYNC_JOB_NAME) == 1
    pushed = sandbox.pushes()
    assert {push["batch"] for push in pushed["pushes"]} == set(keys)
    # Per batch, the sync's metadata is that batch's pushes (its ledger rows, all acknowledged now).
    for batch in ("batch-000", "batch-001"):
        metadata = partition_metadata(instance, AssetKey("storefront_sync"), batch)
        ledger = pl.read_parquet(warehouse_dir / "storefront_sync" / f"{batch}.parquet")
        sent = sum(len(p["prices"]) for p in pushed["pushes"] if p["batch"] == batch)
        assert metadata["pushed"] == sent == ledger.height
        assert metadata["requests"] == sum(1 for p in pushed["pushes"] if p["batch"] == batch)
    assert pushed["duplicates"] == 0 and pushed["repeated_versions"] == 0


def live_prices(sandbox) -> dict[str, dict[str, Any]]:
    return httpx.get(f"{sandbox.url}/storefront/_pushes", timeout=10).json()["prices"]


State = tuple[Decimal | None, bool, str | None, int]


def ledger_state(warehouse_dir, keys: list[str]) -> dict[str, State]:
    """What the ledger says the storefront acknowledged, per SKU."""
    frames = [pl.read_parquet(warehouse_dir / "storefront_sync" / f"{batch}.parquet") for batch in keys]
    ledger = pl.concat(frames).filter(pl.col("acknowledged_at").is_not_null())
    return {
        row["sku"]: (row["price"], row["available"], row["supplier"], row["version"])
        for row in ledger.iter_rows(named=True)
    }


def shown_state(sandbox) -> dict[str, State]:
    """What the sandbox storefront shows, per SKU."""
    return {
        sku: (
            None if entry["price"] is None else Decimal(entry["price"]),
            entry["available"],
            entry["supplier"],
            entry["version"],
        )
        for sku, entry in live_prices(sandbox).items()
    }


def push_after_sweep(defs, instance, cursor: str | None) -> tuple[Any, str]:
    """Evaluate the push sensor, launch its one request; (the run, the new cursor)."""
    push = defs.resolve_sensor_def("storefront_push")
    result = push(build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
    (request,) = result.run_requests
    return launch(defs, instance, SYNC_JOB_NAME, request), result.cursor


def test_a_storefront_that_lost_its_state_is_repaired_once(flow, warehouse_dir, sandbox):
    defs, instance, keys = flow
    sweep(defs, instance, keys)
    first, cursor = push_after_sweep(defs, instance, None)
    assert first.success
    before = ledger_state(warehouse_dir, keys)
    assert before and shown_state(sandbox) == before

    httpx.post(f"{sandbox.url}/_control/storefront_wipe", timeout=10).raise_for_status()
    assert live_prices(sandbox) == {}
    # The next sweep's push notices nothing: against the ledger every price is "unchanged".
    sweep(defs, instance, keys)
    blind, cursor = push_after_sweep(defs, instance, cursor)
    assert blind.success
    assert sum(partition_metadata(instance, AssetKey("storefront_sync"), b)["pushed"] for b in keys) == 0
    assert live_prices(sandbox) == {}

    reconcile = defs.resolve_sensor_def(RECONCILE_SENSOR_NAME)
    context = build_sensor_context(instance=instance, resources={"service_config": ServiceConfigResource()})
    result = reconcile(context)
    assert isinstance(result, SensorResult)
    (tick,) = result.run_requests
    assert tick.run_key == f"storefront_reconcile:{result.cursor}"
    # A later tick of the same period asks for nothing (and the run key would be the same anyway).
    again_context = build_sensor_context(
        instance=instance, cursor=result.cursor, resources={"service_config": ServiceConfigResource()}
    )
    assert isinstance(reconcile(again_context), SkipReason)
    assert launch(defs, instance, RECONCILE_JOB_NAME, tick).success
    totals: Counter[str] = Counter()
    for batch in keys:
        metadata = partition_metadata(instance, AssetKey("storefront_sync"), batch)
        assert metadata["reconcile"] is True
        assert metadata["drift_found"] == metadata["drift_missing"] == metadata["repaired"]
        totals.update({name: metadata[name] for name in ("skus_checked", "drift_found", "repaired")})
    assert totals["skus_checked"] == totals["drift_found"] == totals["repaired"] == len(before)

    # The storefront holds exactly the ledger's prices again, each SKU pushed once more, a new version.
    after = ledger_state(warehouse_dir, keys)
    assert shown_state(sandbox) == after
    assert {sku: state[3] for sku, state in after.items()} == {sku: s[3] + 1 for sku, s in before.items()}
    assert {sku: state[:3] for sku, state in after.items()} == {sku: s[:3] for sku, s in before.items()}
    # Zero duplicate applications: no key applied twice, no (sku, version) applied twice.
    pushes = sandbox.pushes()
    assert pushes["duplicates"] == 0 and pushes["repeated_versions"] == 0
    assert max(Counter(p["key"] for p in pushes["pushes"]).values()) == 1
    versions = Counter((entry["sku"], entry["version"]) for p in pushes["pushes"] for entry in p["prices"])
    assert max(versions.values()) == 1

    # Reconciled: another reconciliation finds no drift and pushes nothing.
    count = len(pushes["pushes"])
    again = RunRequest(run_key="storefront_reconcile:again", tags=tick.tags, run_config=tick.run_config)
    assert launch(defs, instance, RECONCILE_JOB_NAME, again).success
    assert sum(partition_metadata(instance, AssetKey("storefront_sync"), b)["drift_found"] for b in keys) == 0
    assert len(sandbox.pushes()["pushes"]) == count


def test_the_sweep_sensor_launches_one_run_that_prices_pushes_and_repairs(flow, warehouse_dir, sandbox):
    """price_sweep's request runs price_cycle_job: the push happens in the sweep's run, the push sensor
    adds no run, and after a storefront wipe the next cycle run repairs it (reconcile mode), once."""
    defs, instance, keys = flow
    sweeper = defs.resolve_sensor_def("price_sweep")
    assert sweeper.job_name == CYCLE_JOB_NAME
    config = {"service_config": ServiceConfigResource()}

    def cycle(cursor: str | None) -> str | None:
        result = sweeper(build_sensor_context(instance=instance, cursor=cursor, resources=config))
        (request,) = result.run_requests
        assert request.run_config == RECONCILE_RUN_CONFIG
        assert launch(defs, instance, CYCLE_JOB_NAME, request).success
        return result.cursor

    cursor = cycle(None)
    before = ledger_state(warehouse_dir, keys)
    assert before and shown_state(sandbox) == before  # pushed by the cycle run itself
    push = defs.resolve_sensor_def("storefront_push")
    pushed = push(build_sensor_context(instance=instance, cursor=None, definitions=defs))
    assert isinstance(pushed, SensorResult) and pushed.run_requests == []  # nothing left to push
    # The cycle run reconciled: the reconcile sensor does not launch a second run in this period.
    reconcile = defs.resolve_sensor_def(RECONCILE_SENSOR_NAME)
    assert isinstance(reconcile(build_sensor_context(instance=instance, resources=config)), SkipReason)

    httpx.post(f"{sandbox.url}/_control/storefront_wipe", timeout=10).raise_for_status()
    # The next range is due one spacing later; an evaluation as of now skips, so rewind its clock.
    rewound = json.dumps({**json.loads(cursor or "{}"), "launched_at": 0.0})
    cycle(rewound)
    after = ledger_state(warehouse_dir, keys)
    assert shown_state(sandbox) == after
    assert {sku: state[3] for sku, state in after.items()} == {sku: s[3] + 1 for sku, s in before.items()}
    pushes = sandbox.pushes()
    assert pushes["duplicates"] == 0 and pushes["repeated_versions"] == 0
    assert not [run for run in instance.get_runs() if run.job_name in (SYNC_JOB_NAME, RECONCILE_JOB_NAME)]
