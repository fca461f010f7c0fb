"""A downed supplier's offers go stale in the UI's terms (the offers_fresh check state the instance
reports) once its newest successful fetch passes staleness_ttl, and fresh again after recovery,
while the other suppliers and best_offers carry on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
from dagster import AssetCheckEvaluation, AssetCheckKey, AssetKey

from pricing_assets.offers_freshness import FRESH_CHECK
from pricing_assets.partitions import offers_key
from tests.suppliers.test_supplier_offers_asset import BATCH, best_offers_asset, harness_for


def check_state(instance, supplier: str) -> AssetCheckEvaluation:
    """The newest offers_fresh evaluation of a supplier, as the instance (and so the UI) holds it."""
    record = instance.get_latest_asset_check_evaluation_record(
        AssetCheckKey(offers_key(supplier), FRESH_CHECK)
    )
    assert record is not None and record.event is not None
    evaluation = record.event.dagster_event.event_specific_data
    assert isinstance(evaluation, AssetCheckEvaluation)
    return evaluation


def age_files(warehouse_dir: Path, supplier: str, by: timedelta) -> None:
    """Pretend the supplier's last successful fetch happened `by` earlier (time passing in an outage)."""
    for path in (warehouse_dir / "supplier_offers" / supplier).glob("*.parquet"):
        frame = pl.read_parquet(path)
        frame.with_columns(pl.col("fetched_at") - by).write_parquet(path)


def test_downed_supplier_goes_stale_after_the_ttl_and_fresh_after_recovery(sandbox, tmp_path):
    harness = harness_for(sandbox, tmp_path)
    instance = harness.instance
    best = best_offers_asset(harness)
    warehouse_dir = tmp_path / "warehouse"
    assert harness.run(["alpha", "beta"]).success
    assert check_state(instance, "alpha").passed

    # Down, but its last good offers are 10 minutes old: still used, so not stale.
    sandbox.control(faults={"alpha": {"outage": True, "retry_after": 0}})
    age_files(warehouse_dir, "alpha", timedelta(minutes=10))
    result = harness.run(["alpha", "beta"], extra=[best])
    assert result.success
    assert check_state(instance, "alpha").passed

    # Still down 35 minutes later (staleness_ttl 30 min): the check says stale, and why.
    age_files(warehouse_dir, "alpha", timedelta(minutes=25))
    result = harness.run(["alpha", "beta"], extra=[best])
    assert result.success  # one supplier's outage never blocks the others
    stale = check_state(instance, "alpha")
    assert not stale.passed and stale.severity.value == "ERROR"
    assert "stale" in (stale.description or "") and "staleness_ttl is 30 min" in (stale.description or "")
    assert stale.metadata["stale_batches"].value == 1
    assert stale.metadata["oldest_batch_age_s"].value >= 35 * 60
    assert check_state(instance, "beta").passed
    assert "best_offers" in {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    # best_offers stopped using the stale offers: alpha wins nothing any more.
    chosen = harness.warehouse.read(["best_offers"], BATCH)
    assert "alpha" not in set(chosen["supplier"].drop_nulls())
    # The materialization the outage still records is why the freshness policy alone stays green.
    latest = instance.fetch_materializations(offers_key("alpha"), limit=1).records[0]
    assert latest.run_id == result.run_id and "outage" in latest.asset_materialization.metadata

    # Recovered: the next successful fetch is fresh again.
    sandbox.control(reset=True)
    assert harness.run(["alpha", "beta"]).success
    fresh = check_state(instance, "alpha")
    assert fresh.passed and fresh.metadata["stale_batches"].value == 0


def test_stale_batches_outside_the_run_are_seen_too(sandbox, tmp_path):
    """The check judges every batch on file, not only the run's: no flapping between ranges."""
    harness = harness_for(sandbox, tmp_path)
    tags = {
        "dagster/asset_partition_range_start": "batch-000",
        "dagster/asset_partition_range_end": "batch-003",
    }
    assert harness.run(["alpha"], partition_key=None, tags=tags).success
    folder = tmp_path / "warehouse" / "supplier_offers" / "alpha"
    old = pl.read_parquet(folder / "batch-003.parquet")
    old.with_columns(pl.col("fetched_at") - timedelta(hours=2)).write_parquet(folder / "batch-003.parquet")
    assert harness.run(["alpha"], partition_key="batch-000").success
    evaluation = check_state(harness.instance, "alpha")
    assert not evaluation.passed
    assert evaluation.metadata["stale_batch_list"].value == "batch-003"
    assert harness.instance.fetch_materializations(AssetKey(["supplier_offers", "alpha"]), limit=1).records
