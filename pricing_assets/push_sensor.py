"""`storefront_push` sensor: each new `storefront_prices` materialization requests `storefront_sync`.

The cursor is the storage id of the last materialization event handled; the run key is derived from
the event (`storefront_prices:<partition>:<storage id>`), so a materialization is pushed once even if
a tick is evaluated twice. A run that materialized many partitions produced one event per
partition, and each becomes its own sync run for that partition. Several events of one partition
seen in the same tick coalesce into one run keyed by the newest: that sync pushes the newest prices,
which covers the older materializations too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DefaultSensorStatus,
    EventLogRecord,
    JobDefinition,
    PartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

# What define_asset_job returns (UnresolvedAssetJobDefinition) is not exported by dagster's public API.
AssetJob: TypeAlias = Any

STOREFRONT_PRICES = AssetKey("storefront_prices")
STOREFRONT_SYNC = AssetKey("storefront_sync")
SYNC_JOB_NAME = "storefront_sync_job"
# Events read per tick; the rest are read by the next ticks (the cursor only moves past what was read).
MAX_EVENTS_PER_TICK = 1000
PUSH_MAX_RUNTIME_SECONDS = 600


def build_storefront_sync_job(partitions_def: PartitionsDefinition) -> AssetJob:
    """The job the sensor launches: `storefront_sync` alone, partitioned by catalog batch."""
    return define_asset_job(
        name=SYNC_JOB_NAME,
        selection=AssetSelection.assets(STOREFRONT_SYNC),
        partitions_def=partitions_def,
        description="Push what changed in storefront_prices to the storefront (storefront_sync).",
        # Run monitoring ends a run over this, freeing the `storefront` pool slot a dead run worker
        # would hold for ever; the push journal makes the next sync finish what it left.
        tags={"dagster/max_runtime": str(PUSH_MAX_RUNTIME_SECONDS)},
    )


def run_key(partition: str, storage_id: int) -> str:
    """The run key of the sync for one materialization event."""
    return f"storefront_prices:{partition}:{storage_id}"


def push_requests(records: Sequence[EventLogRecord]) -> list[RunRequest]:
    """One run request per partition, keyed by that partition's newest materialization in `records`."""
    newest: dict[str, EventLogRecord] = {}
    for record in records:
        if record.partition_key is not None:
            current = newest.get(record.partition_key)
            if current is None or record.storage_id > current.storage_id:
                newest[record.partition_key] = record
    return [
        RunRequest(
            run_key=run_key(partition, record.storage_id),
            partition_key=partition,
            tags={
                "storefront/trigger_run_id": record.run_id,
                "storefront/trigger_storage_id": str(record.storage_id),
            },
        )
        for partition, record in sorted(newest.items(), key=lambda item: item[1].storage_id)
    ]


def build_storefront_push_sensor(
    sync_job: AssetJob | JobDefinition,
    *,
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    """The storefront_push sensor targeting `sync_job` (see build_storefront_sync_job)."""

    @sensor(
        name="storefront_push",
        job=sync_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="On a new storefront_prices materialization, sync that batch to the storefront.",
    )
    def storefront_push(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        """Request a storefront_sync run per storefront_prices materialization since the cursor."""
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=STOREFRONT_PRICES, after_storage_id=after),
            limit=MAX_EVENTS_PER_TICK,
            ascending=True,
        )
        if not result.records:
            return SkipReason(f"no storefront_prices materialization after storage id {after}")
        cursor = str(max(record.storage_id for record in result.records))
        requests = push_requests(result.records)
        unpartitioned = sum(1 for record in result.records if record.partition_key is None)
        if unpartitioned:
            context.log.warning(
                f"ignored {unpartitioned} storefront_prices materializations without a partition"
            )
        return SensorResult(run_requests=requests, cursor=cursor)

    return storefront_push
