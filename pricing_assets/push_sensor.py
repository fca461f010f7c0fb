"""`storefront_push` sensor: new `storefront_prices` materializations request `storefront_sync`, one
run per producing run's range of batches.

A sweep run prices a range of batches and emits one materialization per batch. Pushing each batch in
its own run (16 serial runs per sweep behind the `storefront` pool) could not keep up with the sweep
cadence; so the sensor groups the materializations of one producing run and requests one
`storefront_sync_job` run over that run's contiguous range (the same range tags a backfill uses).

- Run key `storefront_prices:<first>..<last>:<newest storage id>` (`storefront_prices:<batch>:<id>`
  for one batch): derived from the materializations, so a tick evaluated twice requests the same
  keys and Dagster launches nothing new.
- A producing run still emitting its materializations (the sensor can read between two of them) is
  waited for: its group is requested once every planned batch has materialized or the run ended
  (or after WAIT_FOR_RANGE_SECONDS, so a run that hangs cannot hold pushes back forever). The
  cursor (a storage id) never moves past a group that is still waited for.
- Runless materializations (reported by hand) are each their own group.
- A producing run that pushes itself (the sweep's `price_cycle_job`, tagged PUSHES_IN_RUN_TAG, with
  storefront_sync in its selection) and succeeded gets no push run: the cursor moves past its group.
  If it failed (a blocking check on storefront_prices skipped its push, the storefront refused), its
  range gets a push run like any other: storefront_sync there pushes every row that passes the checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterRun,
    DagsterRunStatus,
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
# A producing run's range is pushed at the latest this long after its newest materialization.
WAIT_FOR_RANGE_SECONDS = 300
PUSH_SENSOR_INTERVAL_SECONDS = 15
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
# A job whose runs push what they price (storefront_sync in the same run) carries this tag.
PUSHES_IN_RUN_TAG = "storefront/push"
PUSHES_IN_RUN = "in_run"
_FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class Producer:
    """What the sensor knows of the run that materialized storefront_prices."""

    finished: bool
    planned: frozenset[str] | None  # batches the run materializes; None when its tags do not say
    pushes_itself: bool = False  # storefront_sync runs in the same run (PUSHES_IN_RUN_TAG)
    succeeded: bool = False  # ended with SUCCESS (so its own push step succeeded too)


PUSH_MAX_RUNTIME_SECONDS = 600


def build_storefront_sync_job() -> AssetJob:
    """The job the sensor launches: `storefront_sync` alone, partitioned by catalog batch."""
    return define_asset_job(
        name=SYNC_JOB_NAME,
        selection=AssetSelection.assets(STOREFRONT_SYNC),
        description="Push what changed in storefront_prices to the storefront (storefront_sync).",
        # Run monitoring ends a run over this, freeing the `storefront` pool slot a dead run worker
        # would hold for ever; the push journal makes the next sync finish what it left.
        tags={"dagster/max_runtime": str(PUSH_MAX_RUNTIME_SECONDS)},
    )


def run_key(partitions: Sequence[str], storage_id: int) -> str:
    """The run key of the sync of one group of batches, from its newest materialization event."""
    span = partitions[0] if len(partitions) == 1 else f"{partitions[0]}..{partitions[-1]}"
    return f"storefront_prices:{span}:{storage_id}"


def producer_of(run: DagsterRun | None, keys: Sequence[str]) -> Producer:
    """A producing run's state and planned batches, from its status and partition tags (None: gone)."""
    if run is None:
        return Producer(finished=True, planned=None)
    tags = run.tags
    planned: frozenset[str] | None = None
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags and tags[RANGE_START_TAG] in keys:
        first, last = keys.index(tags[RANGE_START_TAG]), keys.index(tags[RANGE_END_TAG])
        planned = frozenset(keys[first : last + 1])
    elif PARTITION_TAG in tags:
        planned = frozenset([tags[PARTITION_TAG]])
    # A subset launched from the UI without storefront_sync does not push: the sensor does. No
    # selection (None, or empty for some launches) is the whole job.
    selection = run.asset_selection
    pushes_itself = tags.get(PUSHES_IN_RUN_TAG) == PUSHES_IN_RUN and (
        not selection or STOREFRONT_SYNC in selection
    )
    return Producer(
        finished=run.status in _FINISHED,
        planned=planned,
        pushes_itself=pushes_itself,
        succeeded=run.status == DagsterRunStatus.SUCCESS,
    )


def contiguous(partitions: set[str], keys: Sequence[str]) -> list[list[str]]:
    """The partitions as runs of consecutive keys, in key order."""
    segments: list[list[str]] = []
    previous = -2
    for index, key in enumerate(keys):
        if key not in partitions:
            continue
        if index == previous + 1:
            segments[-1].append(key)
        else:
            segments.append([key])
        previous = index
    return segments


def plan_pushes(
    records: Sequence[EventLogRecord],
    producers: Mapping[str, Producer],
    keys: Sequence[str],
    now: float,
) -> tuple[list[RunRequest], int | None]:
    """Run requests for the groups that are complete, and the storage id the cursor may move to.

    `records` ascending by storage id; `producers` by run id. A group is one producing run's
    materializations (a runless one is its own group); it is complete when its run has ended, when
    every batch the run plans has materialized, or WAIT_FOR_RANGE_SECONDS after its newest event.
    """
    groups: dict[str, list[EventLogRecord]] = {}
    for record in records:
        if record.partition_key is None:
            continue
        group = record.run_id or f"runless:{record.storage_id}"
        groups.setdefault(group, []).append(record)

    def complete(group: str, members: list[EventLogRecord]) -> bool:
        producer = producers.get(members[0].run_id) if members[0].run_id else None
        if producer is None or producer.finished:
            return True
        if producer.pushes_itself:
            # Whether it needs a push run is known when it ends (its own push may fail).
            return now - max(record.timestamp for record in members) >= WAIT_FOR_RANGE_SECONDS
        seen = {record.partition_key for record in members}
        if producer.planned is not None and producer.planned <= seen:
            return True
        return now - max(record.timestamp for record in members) >= WAIT_FOR_RANGE_SECONDS

    ready = {group: members for group, members in groups.items() if complete(group, members)}
    waiting_from = min(
        (members[0].storage_id for group, members in groups.items() if group not in ready), default=None
    )
    if waiting_from is None:
        cursor = max(record.storage_id for record in records) if records else None
    else:
        before = [record.storage_id for record in records if record.storage_id < waiting_from]
        cursor = max(before) if before else None
    requests: list[RunRequest] = []
    for members in sorted(ready.values(), key=lambda group: group[0].storage_id):
        producer = producers.get(members[0].run_id) if members[0].run_id else None
        if producer is not None and producer.pushes_itself and producer.succeeded:
            continue  # its own storefront_sync step pushed these prices
        newest = {record.partition_key: record for record in members}
        for segment in contiguous(set(newest), keys):
            storage_id = max(newest[partition].storage_id for partition in segment)
            tags = {
                "storefront/trigger_run_id": members[0].run_id,
                "storefront/trigger_storage_id": str(storage_id),
            }
            if len(segment) == 1:
                requests.append(
                    RunRequest(run_key=run_key(segment, storage_id), partition_key=segment[0], tags=tags)
                )
            else:
                tags |= {RANGE_START_TAG: segment[0], RANGE_END_TAG: segment[-1]}
                requests.append(RunRequest(run_key=run_key(segment, storage_id), tags=tags))
    return requests, cursor


def build_storefront_push_sensor(
    sync_job: AssetJob | JobDefinition,
    partitions_def: PartitionsDefinition,
    *,
    minimum_interval_seconds: int = PUSH_SENSOR_INTERVAL_SECONDS,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    clock: Callable[[], float] = time.time,
) -> SensorDefinition:
    """The storefront_push sensor targeting `sync_job` (see build_storefront_sync_job)."""

    @sensor(
        name="storefront_push",
        job=sync_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="On new storefront_prices materializations, sync their batches to the storefront: "
        "one run per producing run's range.",
    )
    def storefront_push(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        """Request one storefront_sync run per complete group of new storefront_prices materializations."""
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=STOREFRONT_PRICES, after_storage_id=after),
            limit=MAX_EVENTS_PER_TICK,
            ascending=True,
        )
        if not result.records:
            return SkipReason(f"no storefront_prices materialization after storage id {after}")
        keys = partitions_def.get_partition_keys()
        producers = {
            run_id: producer_of(context.instance.get_run_by_id(run_id), keys)
            for run_id in {record.run_id for record in result.records if record.run_id}
        }
        requests, cursor = plan_pushes(result.records, producers, keys, clock())
        unpartitioned = sum(1 for record in result.records if record.partition_key is None)
        if unpartitioned:
            context.log.warning(
                f"ignored {unpartitioned} storefront_prices materializations without a partition"
            )
        return SensorResult(
            run_requests=requests, cursor=str(cursor) if cursor is not None else context.cursor
        )

    return storefront_push
