"""The price_sweep sensor: cursor, deterministic run keys, resume after restart, full coverage."""

from __future__ import annotations

import json

from dagster import AssetSelection, DagsterInstance, StaticPartitionsDefinition, asset, build_sensor_context

from pricing_assets.logic.batching import batch_keys
from pricing_assets.sweep import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SweepCursor,
    batches_per_tick,
    build_price_sweep_sensor,
    build_sweep_job,
    plan_tick,
)
from resources.runtime import RuntimeConfig

batches = StaticPartitionsDefinition(batch_keys(16))


@asset(partitions_def=batches)
def priced() -> None:
    """Stand-in for the swept assets."""


job = build_sweep_job(AssetSelection.assets(priced), batches)
sensor = build_price_sweep_sensor(job, batches)


def tick(cursor: str | None, sweep_minutes: int = 5):
    context = build_sensor_context(
        cursor=cursor,
        instance=DagsterInstance.ephemeral(),
        resources={
            "service_config": RuntimeConfig(override_json=json.dumps({"sweep_minutes": sweep_minutes}))
        },
    )
    return sensor(context)


def test_batches_per_tick_covers_catalog_within_sweep():
    assert batches_per_tick(16, 5, 30) == 2  # 10 ticks per sweep
    assert batches_per_tick(16, 1, 30) == 8
    assert batches_per_tick(3, 60, 30) == 1


def test_one_full_cycle_covers_every_batch_once_then_wraps():
    cursor: str | None = None
    seen: list[str] = []
    keys = []
    for _ in range(8):
        result = tick(cursor)
        (request,) = result.run_requests
        keys.append(request.run_key)
        start, end = request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
        seen += batch_keys(16)[batch_keys(16).index(start) : batch_keys(16).index(end) + 1]
        cursor = result.cursor
    assert seen == batch_keys(16)
    assert SweepCursor.parse(cursor) == SweepCursor(next_index=0, cycle=1)
    assert len(set(keys)) == 8
    assert keys[0] == "sweep-0-batch-000-batch-001"
    assert tick(cursor).run_requests[0].run_key == "sweep-1-batch-000-batch-001"


def test_same_cursor_gives_same_run_key_after_restart():
    # A daemon restart re-evaluates from the stored cursor: same request, same key, so no double run.
    first = tick(SweepCursor(next_index=6, cycle=3).dump())
    again = tick(SweepCursor(next_index=6, cycle=3).dump())
    assert first.run_requests[0].run_key == again.run_requests[0].run_key == "sweep-3-batch-006-batch-007"
    assert first.cursor == again.cursor == SweepCursor(next_index=8, cycle=3).dump()


def test_sweep_minutes_is_read_each_tick():
    assert tick(None, sweep_minutes=1).run_requests[0].tags[RANGE_END_TAG] == "batch-007"
    assert tick(None, sweep_minutes=5).run_requests[0].tags[RANGE_END_TAG] == "batch-001"


def test_plan_tick_last_partial_range_wraps():
    keys = batch_keys(5)
    chosen, after = plan_tick(keys, SweepCursor(next_index=4, cycle=0), per_tick=2)
    assert chosen == ["batch-004"]
    assert after == SweepCursor(next_index=0, cycle=1)
