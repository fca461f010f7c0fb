"""The price_sweep sensor: cursor, deterministic run keys, spacing, resume after restart, coverage."""

from __future__ import annotations

import json

from dagster import (
    AssetSelection,
    DagsterInstance,
    SkipReason,
    StaticPartitionsDefinition,
    asset,
    build_sensor_context,
)

from pricing_assets.logic.batching import batch_keys
from pricing_assets.sweep import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SweepCursor,
    batches_per_tick,
    build_price_sweep_sensor,
    build_sweep_job,
    plan_runs,
    plan_tick,
)
from resources.service_config import ServiceConfigResource

batches = StaticPartitionsDefinition(batch_keys(16))


@asset(partitions_def=batches)
def priced() -> None:
    """Stand-in for the swept assets."""


class Clock:
    """A settable clock for the sensor."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


clock = Clock()
job = build_sweep_job(AssetSelection.assets(priced))
sensor = build_price_sweep_sensor(job, batches, clock=clock)


def tick(cursor: str | None, **config):
    # These tests walk a sweep of two runs of 8; the default (one run per sweep) has its own test.
    config = {"sweep_batches_per_run": 8, **config}
    context = build_sensor_context(
        cursor=cursor,
        instance=DagsterInstance.ephemeral(),
        resources={"service_config": ServiceConfigResource(override_json=json.dumps(config))},
    )
    return sensor(context)


def covered(request) -> list[str]:
    keys = batch_keys(16)
    start, end = request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
    return keys[keys.index(start) : keys.index(end) + 1]


def test_plan_runs_makes_few_large_runs_spread_over_the_sweep():
    assert batches_per_tick(16, 5, 30) == 2  # what 30 s ticks alone would need
    assert plan_runs(16, 5, 8) == (8, 150.0)  # two runs of 8, one every 2.5 minutes
    assert plan_runs(16, 5, 1) == (2, 37.5)
    assert plan_runs(16, 1, 1) == (8, 30.0)
    assert plan_runs(3, 5, 8) == (3, 300.0)


def test_one_full_cycle_covers_every_batch_once_then_wraps():
    cursor: str | None = None
    seen: list[str] = []
    keys = []
    for _ in range(2):
        result = tick(cursor)
        (request,) = result.run_requests
        keys.append(request.run_key)
        seen += covered(request)
        cursor = result.cursor
        clock.now += 150
    assert seen == batch_keys(16)
    parsed = SweepCursor.parse(cursor)
    assert (parsed.next_index, parsed.cycle) == (0, 1)
    assert keys == ["sweep-0-batch-000-batch-007", "sweep-0-batch-008-batch-015"]
    assert tick(cursor).run_requests[0].run_key == "sweep-1-batch-000-batch-007"


def test_default_is_one_run_per_sweep_for_the_default_catalog():
    context = build_sensor_context(
        cursor=None,
        instance=DagsterInstance.ephemeral(),
        resources={"service_config": ServiceConfigResource(override_json="{}")},
    )
    result = sensor(context)
    (request,) = result.run_requests
    assert covered(request) == batch_keys(16)
    assert request.run_key == "sweep-0-batch-000-batch-015"
    assert SweepCursor.parse(result.cursor).cycle == 1


def test_a_tick_before_the_next_slot_skips_without_moving_the_cursor():
    first = tick(None)
    early = tick(first.cursor)  # same clock: only seconds later in real life
    assert isinstance(early, SkipReason)
    assert "next range due in 150 s" in early.skip_message
    clock.now += 149  # within the 5 % slack of the 150 s spacing
    assert tick(first.cursor).run_requests[0].run_key == "sweep-0-batch-008-batch-015"


def test_same_cursor_gives_same_run_key_after_restart():
    # A daemon restart re-evaluates from the stored cursor: same request, same key, so no double run.
    stored = SweepCursor(next_index=8, cycle=3, launched_at=0.0).dump()
    first, again = tick(stored), tick(stored)
    assert first.run_requests[0].run_key == again.run_requests[0].run_key == "sweep-3-batch-008-batch-015"
    assert SweepCursor.parse(first.cursor).cycle == 4


def test_sweep_settings_are_read_each_tick():
    assert tick(None, sweep_batches_per_run=4).run_requests[0].tags[RANGE_END_TAG] == "batch-003"
    assert (
        tick(None, sweep_minutes=1, sweep_batches_per_run=1).run_requests[0].tags[RANGE_END_TAG]
        == "batch-007"
    )


def test_plan_tick_last_partial_range_wraps():
    keys = batch_keys(5)
    chosen, after = plan_tick(keys, SweepCursor(next_index=4, cycle=0), per_tick=2)
    assert chosen == ["batch-004"]
    assert (after.next_index, after.cycle) == (0, 1)


def test_old_cursor_format_still_parses():
    assert SweepCursor.parse('{"cycle": 2, "next_index": 6}') == SweepCursor(next_index=6, cycle=2)


def test_the_cycle_runs_the_per_sku_supplier_first_and_pushes_in_the_same_run():
    """price_cycle_job (the sensor's job) holds the push and starts the per-SKU supplier's fetch first."""
    from dagster import AssetKey

    from pricing_assets.definitions import build_defs
    from pricing_assets.push_sensor import PUSHES_IN_RUN, PUSHES_IN_RUN_TAG

    defs = build_defs()

    job = defs.resolve_job_def("price_cycle_job")
    assert "storefront_sync" in {node.name for node in job.nodes}
    assert job.tags[PUSHES_IN_RUN_TAG] == PUSHES_IN_RUN
    assert defs.resolve_sensor_def("price_sweep").job_name == "price_cycle_job"
    assert "storefront_sync" not in {node.name for node in defs.resolve_job_def("price_sweep_job").nodes}
    kinds, priorities = {}, {}
    for node in job.nodes:
        if node.name.startswith("supplier_offers__"):
            key = AssetKey(["supplier_offers", node.name.split("__", 1)[1]])
            kinds[node.name] = defs.resolve_assets_def(key).metadata_by_key[key]["adapter"]
            priorities[node.name] = int(node.definition.tags.get("dagster/priority", 0))  # 0: default
            # The same order on Celery workers, by dagster-celery's tag (default 5).
            assert int(node.definition.tags.get("dagster-celery/priority", 5)) == 5 + priorities[node.name]
    first = max(priorities, key=lambda name: priorities[name])
    assert kinds[first] == "per_sku_post"
    assert all(priorities[name] < priorities[first] for name in kinds if kinds[name] != "per_sku_post")
