"""Batched event writes on the production instance (PostgreSQL, DAGSTER_EVENT_BATCH_SIZE of the ConfigMap).

A ranged run's per-partition materializations go to PostgreSQL in one batch per output; each partition
must still get its own materialization with its own numbers, and the UI's partition status must list
exactly the partitions the run wrote, batched or not.
"""

# No `from __future__ import annotations`: Dagster reads the asset's context annotation at definition.
from typing import Any

import polars as pl
import pytest
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)
from dagster_postgres import PostgresEventLogStorage

from bench.cycle import BATCH_SIZE_ENV, production_event_batching
from resources.partition_metadata import add_partition_metadata
from resources.warehouse import WarehouseIOManager

pytestmark = pytest.mark.postgres

BATCHES = [f"batch-{i:03d}" for i in range(5)]
RUN_BATCHES = BATCHES[1:5]
# Each batch of the run gets a different row count, so a batch showing another's number is caught.
ROWS = {batch: 10 * (position + 1) for position, batch in enumerate(RUN_BATCHES)}


def configmap_batch_size() -> str:
    """The batch size the Kubernetes deployment's run pods and code servers get."""
    return production_event_batching()[BATCH_SIZE_ENV]


@asset(
    name="batched_table",
    partitions_def=StaticPartitionsDefinition(BATCHES),
    backfill_policy=BackfillPolicy.single_run(),
)
def batched_table(context: AssetExecutionContext) -> pl.DataFrame:
    """Rows for each batch of the run, a different count per batch, with per-batch metadata."""
    keys = sorted(context.partition_keys)
    add_partition_metadata(context, {key: {"batch_rows": ROWS[key]} for key in keys})
    return pl.concat(pl.DataFrame({"n": list(range(ROWS[key])), "batch": [key] * ROWS[key]}) for key in keys)


@pytest.mark.parametrize("batch_size", [configmap_batch_size(), "0"], ids=["configmap", "off"])
def test_ranged_run_keeps_each_partition_its_own_materialization(batch_size, pg_home, tmp_path, monkeypatch):
    assert int(configmap_batch_size()) >= len(RUN_BATCHES), "the ConfigMap must batch a run's partitions"
    monkeypatch.setenv(BATCH_SIZE_ENV, batch_size)
    batches: list[list[Any]] = []
    original = PostgresEventLogStorage.store_event_batch

    def spy(self: PostgresEventLogStorage, events: Any) -> None:
        batches.append([event.dagster_event_type for event in events])
        original(self, events)

    monkeypatch.setattr(PostgresEventLogStorage, "store_event_batch", spy)

    instance = DagsterInstance.from_config(str(pg_home.home))
    try:
        result = materialize(
            [batched_table],
            instance=instance,
            resources={"io_manager": WarehouseIOManager(base_dir=str(tmp_path / "warehouse"))},
            tags={
                "dagster/asset_partition_range_start": RUN_BATCHES[0],
                "dagster/asset_partition_range_end": RUN_BATCHES[-1],
            },
        )
        assert result.success
        key = AssetKey("batched_table")
        records = instance.fetch_materializations(key, limit=100).records
        by_partition = {record.partition_key: record.asset_materialization for record in records}
        materialized = instance.get_materialized_partitions(key)
    finally:
        instance.dispose()

    materializations = [types for types in batches if DagsterEventType.ASSET_MATERIALIZATION in types]
    if int(batch_size):
        assert materializations == [[DagsterEventType.ASSET_MATERIALIZATION] * len(RUN_BATCHES)]
    else:
        assert materializations == []
    assert materialized == set(RUN_BATCHES)
    assert sorted(by_partition) == RUN_BATCHES
    for batch, materialization in by_partition.items():
        assert materialization is not None
        assert materialization.metadata["batch_rows"].value == ROWS[batch]
        stored = pl.read_parquet(tmp_path / "warehouse" / "batched_table" / f"{batch}.parquet")
        assert stored.height == ROWS[batch]
