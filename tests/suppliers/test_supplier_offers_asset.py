"""The supplier_offers/<id> assets, materialized against the sandbox through a real Dagster instance."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, asset, materialize

from pricing_assets.partitions import catalog_batch_partitions, offers_key
from pricing_assets.supplier_offers import (
    QUARANTINE_RECORD_PAGES,
    SENSOR_NAME_TAG,
    build_supplier_offer_assets,
    quarantine_asset_key,
    quarantine_on_file_empty,
)
from pricing_assets.sweep import SWEEP_SENSOR_NAME
from resources.config import Registry, load_registry
from resources.schemas import CATALOG_ROW, OFFER_TABLE_SCHEMA, QUARANTINE_SCHEMA
from resources.service_config import ServiceConfigResource
from resources.suppliers import SupplierClients
from resources.warehouse import Warehouse, WarehouseIOManager
from tests.suppliers.conftest import SANDBOX_WORLD, world_catalog, write_registry_file

BATCHES = 4
PARTITIONS = catalog_batch_partitions(BATCHES)
BATCH = "batch-001"
# Each batch's own numbers, on its materialization.
PLOTTABLE = ("rows", "rejected", "rejected_share", "skus")
# The run's fetch (one fetch serves every batch of the run), on the supplier_reachable check.
FETCH_STATS = ("requests", "retries", "throttled", "latency_p50_ms", "latency_p95_ms", "duration_s")


@asset(name="catalog")
def catalog_stub() -> pl.DataFrame:
    """Stand-in for the catalog asset (which reads the storefront): the sandbox world's catalog."""
    return world_catalog(BATCHES)


def batch_skus(batch: str) -> set[str]:
    catalog = world_catalog(BATCHES)
    return set(catalog.filter((pl.col("batch") == batch) & pl.col("active"))["sku"])


@dataclass(kw_only=True)
class _Harness:
    run: Callable[..., Any]
    warehouse: Warehouse
    registry: Registry
    feeds: list
    instance: DagsterInstance


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    """The packaged registry's REST suppliers with fast retries, as a YAML file."""
    return write_registry_file(tmp_path, BATCHES)


def harness_for(sandbox, tmp_path: Path) -> _Harness:
    """Materialize supplier assets for a batch in one instance, with the catalog already there."""
    registry_file = write_registry_file(tmp_path, BATCHES)
    registry = load_registry(registry_file)
    feeds = build_supplier_offer_assets(registry, PARTITIONS)
    instance = DagsterInstance.ephemeral()
    warehouse_dir = str(tmp_path / "warehouse")

    def resources(service_config: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "io_manager": WarehouseIOManager(base_dir=warehouse_dir),
            "warehouse": Warehouse(base_dir=warehouse_dir),
            "service_config": ServiceConfigResource(override_json=json.dumps(service_config or {})),
            "suppliers": SupplierClients(registry_path=str(registry_file)),
        }

    materialize([catalog_stub], resources=resources(), instance=instance)

    def run(
        suppliers: list[str],
        *,
        partition_key: str | None = BATCH,
        service_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        extra: list | None = None,
    ):
        # Both tables of each supplier step, as the sweep selects them.
        selection = [key for s in suppliers for key in (offers_key(s), quarantine_asset_key(s))]
        selection += [a.key for a in extra or []]
        return materialize(
            [catalog_stub, *feeds, *(extra or [])],
            selection=selection,
            partition_key=partition_key,
            resources=resources(service_config),
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )

    return _Harness(
        run=run,
        warehouse=Warehouse(base_dir=warehouse_dir),
        registry=registry,
        feeds=feeds,
        instance=instance,
    )


@pytest.fixture
def harness(sandbox, tmp_path: Path) -> _Harness:
    """Supplier assets against the sandbox in one instance (see harness_for)."""
    return harness_for(sandbox, tmp_path)


def materializations(result, table: str | None = None) -> dict[str, Any]:
    """Materializations by last key segment (supplier or asset name), quarantine tables left out unless
    `table` names the key's first segment."""
    return {
        event.asset_key.path[-1]: event.materialization
        for event in result.get_asset_materialization_events()
        if (event.asset_key.path[0] == table if table else event.asset_key.path[0] != "supplier_quarantine")
    }


def test_definitions_carry_pool_freshness_partitions_and_blocking_check(registry_file):
    built = build_supplier_offer_assets(load_registry(registry_file), PARTITIONS)
    feeds = {key: a for a in built for key in a.keys if key.path[0] == "supplier_offers"}
    assert set(feeds) == {offers_key(s) for s in ("alpha", "beta", "gamma")}
    alpha = feeds[offers_key("alpha")]
    assert alpha.op.pool == "supplier_alpha"
    assert alpha.partitions_def == PARTITIONS
    assert alpha.backfill_policy.max_partitions_per_run == 16
    spec = next(spec for spec in alpha.specs if spec.key == offers_key("alpha"))
    assert spec.freshness_policy.fail_window.to_timedelta() == timedelta(minutes=30)
    assert spec.freshness_policy.warn_window.to_timedelta() == timedelta(minutes=10)
    checks = {spec.name: spec.blocking for spec in alpha.check_specs}
    assert checks == {"rejected_share": True, "supplier_reachable": False, "offers_fresh": False}
    assert AssetKey("catalog") in alpha.dependency_keys


def test_every_feed_materializes_its_batch_with_plottable_metadata(harness):
    result = harness.run(["alpha", "beta", "gamma"])
    assert result.success
    events = materializations(result)
    skus = batch_skus(BATCH)
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    for supplier in ("alpha", "beta", "gamma"):
        metadata = events[supplier].metadata
        for name in PLOTTABLE:
            assert isinstance(metadata[name].value, int | float), (supplier, name)
        fetch = checks[(supplier, "supplier_reachable")].metadata
        for name in FETCH_STATS:
            assert isinstance(fetch[name].value, int | float), (supplier, name)
        assert metadata["skus"].value == len(skus)
        frame = harness.warehouse.read(["supplier_offers", supplier], BATCH)
        assert frame.columns == [*OFFER_TABLE_SCHEMA, "batch"]
        # Each offer's catalog row is its SKU's position among the batch's catalog rows (inactive too).
        batch_rows = harness.warehouse.read(["catalog"]).filter(pl.col("batch") == BATCH).get_column("sku")
        assert batch_rows.gather(frame[CATALOG_ROW]).to_list() == frame["sku"].to_list()
        assert set(frame["sku"]) == skus & set(SANDBOX_WORLD.offers(supplier))
        assert metadata["rows"].value == frame.height
        assert metadata["rejected"].value == 0
        assert frame["batch"].unique().to_list() == [BATCH]
        quarantine = harness.warehouse.read(["supplier_quarantine", supplier], BATCH)
        assert quarantine.height == 0 and quarantine.columns == [*QUARANTINE_SCHEMA, "batch"]
    assert checks[("gamma", "supplier_reachable")].metadata["requests"].value == len(skus)
    assert {key: evaluation.passed for key, evaluation in checks.items()} == {
        (s, c): True
        for s in ("alpha", "beta", "gamma")
        for c in ("supplier_reachable", "rejected_share", "offers_fresh")
    }


def test_ranged_run_writes_one_file_per_batch(harness):
    tags = {
        "dagster/asset_partition_range_start": "batch-000",
        "dagster/asset_partition_range_end": "batch-003",
    }
    result = harness.run(["alpha"], partition_key=None, tags=tags)
    assert result.success
    for batch in PARTITIONS.get_partition_keys():
        frame = harness.warehouse.read(["supplier_offers", "alpha"], batch)
        assert set(frame["sku"]) == batch_skus(batch) & set(SANDBOX_WORLD.offers("alpha"))


def test_quarantine_is_written_and_counted(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 4, "duplicate_conflicts": 1}})
    result = harness.run(["alpha"])
    assert result.success
    injected = sandbox.counters()["alpha.bad_rows"]
    assert injected == 6
    quarantine = harness.warehouse.read(["supplier_quarantine", "alpha"], BATCH)
    assert quarantine.height == injected
    assert materializations(result)["alpha"].metadata["rejected"].value == injected
    assert "conflicting duplicate sku" in materializations(result)["alpha"].metadata["reasons"].value


def test_rejected_share_over_threshold_fails_and_publishes_nothing(harness, sandbox):
    assert harness.run(["alpha"]).success
    before = harness.warehouse.read(["supplier_offers", "alpha"], BATCH)
    sandbox.control(faults={"alpha": {"bad_rows": 1000}})
    result = harness.run(["alpha"], service_config={"quarantine_max_share": "0.2"})
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["supplier_reachable"].passed
    evaluation = checks["rejected_share"]
    assert not evaluation.passed and evaluation.metadata["rejected_share"].value == 1.0
    assert "alpha" not in materializations(result)
    # The last good offers stay; the rejects are there for a human to read.
    assert harness.warehouse.read(["supplier_offers", "alpha"], BATCH).equals(before)
    assert harness.warehouse.read(["supplier_quarantine", "alpha"], BATCH).height == before.height


def best_offers_asset(harness):
    from pricing_assets.best_offers import build_best_offers_asset

    return build_best_offers_asset(harness.registry, PARTITIONS)


def test_one_supplier_down_others_and_best_offers_still_materialize(harness, sandbox):
    assert harness.run(["alpha", "beta", "gamma"]).success
    before = harness.warehouse.read(["supplier_offers", "alpha"], BATCH)
    sandbox.control(faults={"alpha": {"outage": True, "retry_after": 0}})
    best = best_offers_asset(harness)
    result = harness.run(["alpha", "beta", "gamma"], extra=[best])
    assert result.success
    events = materializations(result)
    assert {"beta", "gamma", "best_offers"} <= set(events)
    # The outage is visible: a failed check and metadata naming the endpoint and status.
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    down = checks[("alpha", "supplier_reachable")]
    assert not down.passed and down.severity.value == "ERROR"
    assert "failed after 3 attempts" in down.description and "HTTP 503" in down.description
    assert events["alpha"].metadata["status"].value == 503 and down.metadata["requests"].value == 3
    assert checks[("beta", "supplier_reachable")].passed
    # Alpha's last good offers stay in place and still count for best offers (within staleness_ttl).
    assert harness.warehouse.read(["supplier_offers", "alpha"], BATCH).equals(before)
    chosen = harness.warehouse.read(["best_offers"], BATCH)
    assert set(chosen["sku"]) == batch_skus(BATCH)
    assert {"alpha", "beta", "gamma"} <= set(chosen["supplier"].drop_nulls())


def test_disabled_supplier_is_skipped_visibly_and_left_out_of_best_offers(harness, sandbox):
    assert harness.run(["beta"]).success  # beta has offers on file from before it was switched off
    sandbox.control(reset=True)
    config = {"suppliers": {"beta": {"enabled": False}}}
    result = harness.run(["alpha", "beta"], service_config=config, extra=[best_offers_asset(harness)])
    assert result.success
    events = materializations(result)
    assert events["beta"].metadata["skipped"].value == "disabled"
    assert "rows" not in events["beta"].metadata
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    assert checks[("beta", "rejected_share")].metadata["skipped"].value == "disabled"
    assert sandbox.counters().get("beta.requests", 0) == 0
    chosen = harness.warehouse.read(["best_offers"], BATCH)
    assert "beta" not in set(chosen["supplier"].drop_nulls())
    assert "beta" not in set(chosen["runner_up_supplier"].drop_nulls())
    assert "alpha" in set(chosen["supplier"].drop_nulls())


def test_quarantine_is_its_own_asset_with_each_batch_row_count(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    tags = {
        "dagster/asset_partition_range_start": "batch-000",
        "dagster/asset_partition_range_end": "batch-003",
    }
    result = harness.run(["alpha"], partition_key=None, tags=tags)
    assert result.success
    events = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key == quarantine_asset_key("alpha")
    ]
    assert sorted(event.partition for event in events) == PARTITIONS.get_partition_keys()
    heights = []
    for event in events:
        stored = harness.warehouse.read(["supplier_quarantine", "alpha"], event.partition)
        metadata = event.materialization.metadata
        # Each batch's own count and file, not the run's total.
        assert metadata["rows"].value == stored.height
        assert metadata["path"].value.endswith(f"supplier_quarantine/alpha/{event.partition}.parquet")
        assert set(stored.get_column("batch")) <= {event.partition}
        heights.append(stored.height)
    assert sum(heights) == sandbox.counters()["alpha.bad_rows"] > 0
    # The files have the columns the asset declares to the catalog.
    [feed] = [a for a in harness.feeds if quarantine_asset_key("alpha") in a.keys]
    declared = feed.specs_by_key[quarantine_asset_key("alpha")].metadata["dagster/column_schema"]
    assert [(c.name, c.type) for c in declared.columns] == [(n, str(t)) for n, t in stored.schema.items()]


def test_refused_offers_still_materialize_their_quarantine(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 1000}})
    result = harness.run(["alpha"], service_config={"quarantine_max_share": "0.2"})
    assert not result.success
    assert "alpha" not in materializations(result)
    [quarantine] = materializations(result, "supplier_quarantine").values()
    stored = harness.warehouse.read(["supplier_quarantine", "alpha"], BATCH)
    assert quarantine.metadata["rows"].value == stored.height > 0
    assert not harness.warehouse.exists(["supplier_offers", "alpha"], BATCH)


def test_a_rerun_replaces_the_batch_quarantine_even_when_empty(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    assert harness.run(["alpha"]).success
    assert harness.warehouse.read(["supplier_quarantine", "alpha"], BATCH).height > 0
    sandbox.control(reset=True)
    result = harness.run(["alpha"])
    assert result.success
    assert harness.warehouse.read(["supplier_quarantine", "alpha"], BATCH).height == 0
    assert materializations(result, "supplier_quarantine")["alpha"].metadata["rows"].value == 0


def test_an_outage_or_a_disabled_supplier_leaves_the_quarantine_as_it_was(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    assert harness.run(["alpha"]).success
    path = Path(str(harness.warehouse.path(["supplier_quarantine", "alpha"], BATCH)))
    before = path.read_bytes()
    sandbox.control(reset=True)
    sandbox.control(faults={"alpha": {"outage": True, "retry_after": 0}})
    down = harness.run(["alpha"])
    assert down.success and "alpha" not in materializations(down, "supplier_quarantine")
    disabled = harness.run(["alpha"], service_config={"suppliers": {"alpha": {"enabled": False}}})
    assert disabled.success and "alpha" not in materializations(disabled, "supplier_quarantine")
    assert path.read_bytes() == before


def test_either_table_can_be_materialized_alone(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    # harness.run selects both tables; one of them is selected here.
    resources = {
        "io_manager": WarehouseIOManager(base_dir=str(harness.warehouse.root())),
        "warehouse": harness.warehouse,
        "service_config": ServiceConfigResource(),
        "suppliers": SupplierClients(registry_path=harness.registry.source),
    }
    only_quarantine = materialize(
        [catalog_stub, *harness.feeds],
        selection=[quarantine_asset_key("alpha")],
        partition_key=BATCH,
        resources=resources,
        instance=harness.instance,
    )
    assert [e.asset_key for e in only_quarantine.get_asset_materialization_events()] == [
        quarantine_asset_key("alpha")
    ]
    assert only_quarantine.get_asset_check_evaluations() == []
    assert not harness.warehouse.exists(["supplier_offers", "alpha"], BATCH)
    assert harness.warehouse.read(["supplier_quarantine", "alpha"], BATCH).height > 0
    only_offers = materialize(
        [catalog_stub, *harness.feeds],
        selection=[offers_key("alpha")],
        partition_key=BATCH,
        resources=resources,
        instance=harness.instance,
    )
    assert [e.asset_key for e in only_offers.get_asset_materialization_events()] == [offers_key("alpha")]
    assert harness.warehouse.exists(["supplier_offers", "alpha"], BATCH)


def test_best_offers_reads_each_offer_at_its_row_of_the_run_catalog(harness):
    from pricing_assets.best_offers import read_run_catalog, read_supplier_offers

    batches = ["batch-000", "batch-001", "batch-002"]
    tags = {
        "dagster/asset_partition_range_start": batches[0],
        "dagster/asset_partition_range_end": batches[-1],
    }
    assert harness.run(["alpha", "beta", "gamma"], partition_key=None, tags=tags).success
    suppliers = ["alpha", "beta", "gamma"]
    # The run's catalog as best_offers reads it: every row of its batches, in catalog order.
    # (This catalog is not sorted by batch, so read_run_catalog also brings each batch's rows together.)
    run_catalog = read_run_catalog(harness.warehouse.read(["catalog"]).lazy(), batches)
    offers = read_supplier_offers(harness.warehouse, suppliers, batches, run_catalog)
    assert offers.height > 0 and offers.get_column(CATALOG_ROW).null_count() == 0
    assert (
        run_catalog.get_column("sku").gather(offers.get_column(CATALOG_ROW)).equals(offers.get_column("sku"))
    )
    # A file from before offers carried their row reads back with null rows (the selection then hashes).
    old = harness.warehouse.read(["supplier_offers", "beta"], "batch-001").drop(CATALOG_ROW)
    harness.warehouse.write(old, ["supplier_offers", "beta"], "batch-001")
    mixed = read_supplier_offers(harness.warehouse, suppliers, batches, run_catalog)
    assert mixed.get_column(CATALOG_ROW).null_count() == old.height > 0
    # Without the run's catalog there is nothing to place rows in: the column is left out.
    assert CATALOG_ROW not in read_supplier_offers(harness.warehouse, suppliers, batches).columns


def test_rejected_rows_land_in_their_skus_batch_and_rows_without_a_sku_in_the_first(harness, sandbox):
    """A ranged run's rejects: each in its SKU's batch file; the two without a SKU in the first batch."""
    sandbox.control(faults={"beta": {"bad_rows": 6, "missing_fields": 2, "missing_field": "sku"}})
    tags = {
        "dagster/asset_partition_range_start": "batch-000",
        "dagster/asset_partition_range_end": "batch-003",
    }
    assert harness.run(["beta"], partition_key=None, tags=tags).success
    files = {
        batch: harness.warehouse.read(["supplier_quarantine", "beta"], batch)
        for batch in PARTITIONS.get_partition_keys()
    }
    without = {batch: frame.filter(pl.col("sku").is_null()).height for batch, frame in files.items()}
    assert without == {"batch-000": 2, "batch-001": 0, "batch-002": 0, "batch-003": 0}
    with_sku = [(sku, batch) for batch, frame in files.items() for sku in frame["sku"].drop_nulls()]
    assert len(with_sku) == 6
    assert all(sku in batch_skus(batch) for sku, batch in with_sku)


SWEEP_TAGS = {
    "dagster/asset_partition_range_start": "batch-000",
    "dagster/asset_partition_range_end": "batch-003",
    # What a run the price_sweep sensor launched carries.
    SENSOR_NAME_TAG: SWEEP_SENSOR_NAME,
}


def quarantine_files(harness) -> dict[str, tuple[int, bytes]]:
    """Each batch's quarantine file of alpha: (mtime_ns, bytes)."""
    out = {}
    for batch in PARTITIONS.get_partition_keys():
        path = Path(str(harness.warehouse.path(["supplier_quarantine", "alpha"], batch)))
        out[batch] = (path.stat().st_mtime_ns, path.read_bytes())
    return out


def quarantine_partitions(result) -> list[str]:
    """The partitions of alpha's quarantine this run materialized."""
    return sorted(
        event.partition
        for event in result.get_asset_materialization_events()
        if event.asset_key == quarantine_asset_key("alpha")
    )


def test_a_sweep_run_leaves_an_empty_quarantine_as_it_is(harness):
    every = PARTITIONS.get_partition_keys()
    first = harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS)
    # Never materialized before: written, so the UI shows every batch's (empty) quarantine.
    assert first.success and quarantine_partitions(first) == every
    before = quarantine_files(harness)
    again = harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS)
    assert again.success
    assert quarantine_partitions(again) == []
    assert quarantine_files(harness) == before
    # The offers are written as always, and each batch's own count of rejects says this fetch's zero.
    offers = [e for e in again.get_asset_materialization_events() if e.asset_key == offers_key("alpha")]
    assert sorted(e.partition for e in offers) == every
    assert {e.materialization.metadata["rejected"].value for e in offers} == {0}
    logs = harness.instance.all_logs(again.run_id)
    logged = [entry.user_message for entry in logs if "left as it is" in entry.user_message]
    assert logged == [
        "supplier alpha: nothing rejected, and every batch's quarantine on file is empty: "
        "supplier_quarantine/alpha left as it is"
    ]


def test_rejects_on_file_are_cleared_before_the_sweep_skips_an_empty_quarantine(harness, sandbox):
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    assert harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS).success
    assert (
        sum(
            harness.warehouse.read(["supplier_quarantine", "alpha"], b).height
            for b in PARTITIONS.get_partition_keys()
        )
        > 0
    )
    sandbox.control(reset=True)
    # The fetch rejects nothing, but old rejects are on file: they are replaced by empty files.
    clearing = harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS)
    assert clearing.success and quarantine_partitions(clearing) == PARTITIONS.get_partition_keys()
    assert all(
        harness.warehouse.read(["supplier_quarantine", "alpha"], b).height == 0
        for b in PARTITIONS.get_partition_keys()
    )
    assert quarantine_partitions(harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS)) == []
    # Rejects again: written at once.
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    rejecting = harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS)
    assert quarantine_partitions(rejecting) == PARTITIONS.get_partition_keys()


@pytest.mark.parametrize(
    "change",
    ["not launched by the sweep sensor", "another sensor", "a batch's file is missing", "quarantine alone"],
)
def test_an_empty_quarantine_is_written_unless_the_sweep_knows_it_is_on_file(harness, change):
    assert harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS).success
    tags = dict(SWEEP_TAGS)
    if change == "not launched by the sweep sensor":
        del tags[SENSOR_NAME_TAG]
    elif change == "another sensor":
        tags[SENSOR_NAME_TAG] = "storefront_reconcile"
    elif change == "a batch's file is missing":
        Path(str(harness.warehouse.path(["supplier_quarantine", "alpha"], "batch-002"))).unlink()
    if change == "quarantine alone":
        result = materialize(
            [catalog_stub, *harness.feeds],
            selection=[quarantine_asset_key("alpha")],
            resources={
                "io_manager": WarehouseIOManager(base_dir=str(harness.warehouse.root())),
                "warehouse": harness.warehouse,
                "service_config": ServiceConfigResource(),
                "suppliers": SupplierClients(registry_path=harness.registry.source),
            },
            instance=harness.instance,
            tags=tags,
        )
    else:
        result = harness.run(["alpha"], partition_key=None, tags=tags)
    assert result.success
    assert quarantine_partitions(result) == PARTITIONS.get_partition_keys()
    assert harness.warehouse.exists(["supplier_quarantine", "alpha"], "batch-002")


def test_the_quarantine_on_file_is_empty_only_when_every_batch_says_so(harness, sandbox):
    key = quarantine_asset_key("alpha")
    every = PARTITIONS.get_partition_keys()
    assert not quarantine_on_file_empty(harness.instance, key, every, harness.warehouse)  # never written
    assert harness.run(["alpha"], partition_key=None, tags=SWEEP_TAGS).success
    assert quarantine_on_file_empty(harness.instance, key, every, harness.warehouse)
    # One batch written many times since: its records fill the first pages, the others are found later.
    for _ in range(3):
        assert harness.run(["alpha"], partition_key="batch-000").success
    assert quarantine_on_file_empty(harness.instance, key, every, harness.warehouse)
    # ... but not past the pages read: then it answers "write it" rather than guess.
    for _ in range(QUARANTINE_RECORD_PAGES * len(every)):
        assert harness.run(["alpha"], partition_key="batch-000").success
    assert not quarantine_on_file_empty(harness.instance, key, every, harness.warehouse)
    assert quarantine_on_file_empty(harness.instance, key, ["batch-000"], harness.warehouse)
    # A batch whose latest materialization recorded rejects.
    sandbox.control(faults={"alpha": {"bad_rows": 4}})
    assert harness.run(["alpha"], partition_key="batch-001").success
    assert harness.warehouse.read(["supplier_quarantine", "alpha"], "batch-001").height > 0
    assert not quarantine_on_file_empty(harness.instance, key, ["batch-001", "batch-002"], harness.warehouse)
    assert quarantine_on_file_empty(harness.instance, key, ["batch-002", "batch-003"], harness.warehouse)
