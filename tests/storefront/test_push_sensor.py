"""The storefront_push sensor: one sync run per producing run's range, deterministic keys, cursor."""

from dataclasses import dataclass

import polars as pl
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    Definitions,
    IOManager,
    RunRequest,
    SensorResult,
    SkipReason,
    StaticPartitionsDefinition,
    asset,
    build_sensor_context,
    instance_for_test,
    io_manager,
    materialize,
)

from pricing_assets.push_sensor import (
    PUSHES_IN_RUN,
    PUSHES_IN_RUN_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    SYNC_JOB_NAME,
    WAIT_FOR_RANGE_SECONDS,
    Producer,
    build_storefront_push_sensor,
    build_storefront_sync_job,
    contiguous,
    plan_pushes,
    producer_of,
    run_key,
)
from resources.push_state import PushState
from resources.service_config import ServiceConfigResource
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.warehouse import Warehouse, WarehouseIOManager
from tests.storefront.conftest import BATCHES, PRICES_SPEC, SYNC_ASSET

JOB = build_storefront_sync_job()
SENSOR = build_storefront_push_sensor(JOB, BATCHES)
SWEEP = StaticPartitionsDefinition([f"batch-{i:03d}" for i in range(16)])
SWEEP_KEYS = SWEEP.get_partition_keys()


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


def materialized(instance, partition: str) -> int:
    """Record a runless storefront_prices materialization of one partition; return its storage id."""
    instance.report_runless_asset_event(AssetMaterialization("storefront_prices", partition=partition))
    records = instance.fetch_materializations(AssetKey("storefront_prices"), limit=1).records
    return records[0].storage_id


def evaluate(instance, cursor: str | None, sensor=SENSOR) -> SensorResult | SkipReason:
    return sensor(build_sensor_context(instance=instance, cursor=cursor))


class NullIO(IOManager):
    def handle_output(self, context, obj):
        return None

    def load_input(self, context):
        return None


@io_manager
def null_io():
    return NullIO()


def prices_asset(partitions: StaticPartitionsDefinition):
    @asset(name="storefront_prices", partitions_def=partitions)
    def storefront_prices(context) -> pl.DataFrame:
        return pl.DataFrame({"sku": ["A"], "batch": [context.partition_keys[0]]})

    return storefront_prices


def test_a_sweep_of_16_batches_leads_to_one_push_run_for_its_range(instance):
    """A ranged run over 16 batches emits 16 materializations: one sync request covers them all."""
    sensor = build_storefront_push_sensor(build_storefront_sync_job(), SWEEP)
    tags = {RANGE_START_TAG: "batch-000", RANGE_END_TAG: "batch-015"}
    run = materialize([prices_asset(SWEEP)], instance=instance, resources={"io_manager": null_io}, tags=tags)
    records = instance.fetch_materializations(AssetKey("storefront_prices"), limit=100).records
    assert len(records) == 16
    result = evaluate(instance, None, sensor)
    (request,) = result.run_requests
    newest = max(record.storage_id for record in records)
    assert request.run_key == f"storefront_prices:batch-000..batch-015:{newest}"
    assert request.partition_key is None
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("batch-000", "batch-015")
    assert request.tags["storefront/trigger_run_id"] == run.run_id
    assert result.cursor == str(newest)
    # The same tick evaluated twice requests the same key (Dagster launches a run key once)...
    assert [r.run_key for r in evaluate(instance, None, sensor).run_requests] == [request.run_key]
    # ...and from the advanced cursor there is nothing more.
    assert isinstance(evaluate(instance, result.cursor, sensor), SkipReason)


@dataclass(frozen=True)
class Record:
    """The fields of an EventLogRecord the planner reads."""

    storage_id: int
    run_id: str
    partition_key: str | None
    timestamp: float = 1000.0


def sweep_records(run_id: str, count: int, first_id: int = 1) -> list[Record]:
    return [Record(first_id + i, run_id, SWEEP_KEYS[i]) for i in range(count)]


def test_a_run_still_emitting_its_range_is_waited_for_and_the_cursor_stays_before_it():
    producer = {"sweep": Producer(finished=False, planned=frozenset(SWEEP_KEYS))}
    partial = sweep_records("sweep", 7, first_id=11)
    requests, cursor = plan_pushes([Record(10, "", "batch-003"), *partial], producer, SWEEP_KEYS, now=1001)
    # Only the runless event before it is requested; the cursor does not pass the waiting run.
    assert [r.run_key for r in requests] == [run_key(["batch-003"], 10)]
    assert cursor == 10
    complete = sweep_records("sweep", 16, first_id=11)
    requests, cursor = plan_pushes(complete, producer, SWEEP_KEYS, now=1001)
    assert [r.run_key for r in requests] == [run_key(["batch-000", "batch-015"], 26)]
    assert cursor == 26


def test_a_run_that_ended_or_hangs_is_pushed_with_what_it_materialized():
    partial = sweep_records("sweep", 5)
    ended = {"sweep": Producer(finished=True, planned=frozenset(SWEEP_KEYS))}
    (request,) = plan_pushes(partial, ended, SWEEP_KEYS, now=1001)[0]
    assert request.tags[RANGE_END_TAG] == "batch-004"
    hanging = {"sweep": Producer(finished=False, planned=frozenset(SWEEP_KEYS))}
    assert plan_pushes(partial, hanging, SWEEP_KEYS, now=1000 + WAIT_FOR_RANGE_SECONDS - 1)[0] == []
    assert len(plan_pushes(partial, hanging, SWEEP_KEYS, now=1000 + WAIT_FOR_RANGE_SECONDS)[0]) == 1


def test_groups_are_per_producing_run_and_split_into_contiguous_ranges():
    records = [
        Record(1, "a", "batch-000"),
        Record(2, "a", "batch-001"),
        Record(3, "a", "batch-005"),
        Record(4, "b", "batch-001"),
    ]
    producers = {"a": Producer(True, None), "b": Producer(True, None)}
    requests, cursor = plan_pushes(records, producers, SWEEP_KEYS, now=1001)
    assert [r.run_key for r in requests] == [
        run_key(["batch-000", "batch-001"], 2),
        run_key(["batch-005"], 3),
        run_key(["batch-001"], 4),
    ]
    assert requests[1].partition_key == "batch-005"
    assert cursor == 4
    assert contiguous({"batch-002", "batch-000", "batch-001", "batch-009"}, SWEEP_KEYS) == [
        ["batch-000", "batch-001", "batch-002"],
        ["batch-009"],
    ]


def test_runless_materializations_each_request_their_batch(instance):
    first = materialized(instance, "batch-000")
    second = materialized(instance, "batch-001")
    result = evaluate(instance, cursor=None)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("batch-000", f"storefront_prices:batch-000:{first}"),
        ("batch-001", f"storefront_prices:batch-001:{second}"),
    ]
    assert result.cursor == str(second)
    assert isinstance(evaluate(instance, cursor=result.cursor), SkipReason)


def test_a_single_partition_run_triggers_a_sync_of_that_batch(instance):
    resources = {"io_manager": null_io}
    run = materialize(
        [prices_asset(BATCHES)], partition_key="batch-001", instance=instance, resources=resources
    )
    (request,) = evaluate(instance, cursor=None).run_requests
    assert isinstance(request, RunRequest) and request.partition_key == "batch-001"
    assert request.tags["storefront/trigger_run_id"] == run.run_id


def test_sensor_targets_the_sync_job_and_definitions_validate():
    resources = {
        "io_manager": WarehouseIOManager(base_dir="unused"),
        "warehouse": Warehouse(base_dir="unused"),
        "push_state": PushState(base_dir="unused"),
        "service_config": ServiceConfigResource(),
        "storefront": Storefront(url="http://127.0.0.1:9", webhook_secret="unused"),
        "shopify": ShopifyStorefront(),
    }
    defs = Definitions(assets=[SYNC_ASSET, PRICES_SPEC], jobs=[JOB], sensors=[SENSOR], resources=resources)
    job = defs.resolve_job_def(SYNC_JOB_NAME)
    assert [key.to_user_string() for key in job.asset_layer.selected_asset_keys] == ["storefront_sync"]
    assert SENSOR.job_name == SYNC_JOB_NAME
    assert job.partitions_def.get_partition_keys() == BATCHES.get_partition_keys()


def test_a_run_that_pushes_itself_gets_no_push_run_and_the_cursor_moves_past_it(instance):
    """The sweep's price_cycle_job pushes in the same run: the sensor requests nothing for its range."""
    sensor = build_storefront_push_sensor(build_storefront_sync_job(), SWEEP)
    tags = {RANGE_START_TAG: "batch-000", RANGE_END_TAG: "batch-015", PUSHES_IN_RUN_TAG: PUSHES_IN_RUN}

    @asset(name="storefront_sync", partitions_def=SWEEP, deps=["storefront_prices"])
    def storefront_sync() -> None:
        """Stands for the push step of the same run."""

    assets = [prices_asset(SWEEP), storefront_sync]
    materialize(assets, instance=instance, resources={"io_manager": null_io}, tags=tags)
    newest = instance.fetch_materializations(AssetKey("storefront_prices"), limit=1).records[0].storage_id
    result = evaluate(instance, None, sensor)
    assert result.run_requests == []
    assert result.cursor == str(newest)


def test_a_self_pushing_run_that_failed_gets_a_push_run_for_its_range():
    """Planner: a self-pushing run is waited for; if it failed (a blocking check skipped its push, the
    storefront refused), its range is pushed by a sync run; if it succeeded, nothing is requested."""
    records = [*sweep_records("cycle", 2), Record(10, "plain", SWEEP_KEYS[5])]
    plain = Producer(finished=True, planned=None)
    running = Producer(finished=False, planned=frozenset(SWEEP_KEYS[:2]), pushes_itself=True)
    requests, cursor = plan_pushes(records, {"cycle": running, "plain": plain}, SWEEP_KEYS, now=1000.0)
    assert [r.partition_key for r in requests] == [SWEEP_KEYS[5]]
    assert cursor is None  # still waiting for the cycle run, though both its batches materialized
    failed = Producer(finished=True, planned=frozenset(SWEEP_KEYS[:2]), pushes_itself=True)
    requests, cursor = plan_pushes(records, {"cycle": failed, "plain": plain}, SWEEP_KEYS, now=1000.0)
    assert [(r.tags.get(RANGE_START_TAG), r.partition_key) for r in requests] == [
        (SWEEP_KEYS[0], None),
        (None, SWEEP_KEYS[5]),
    ]
    assert cursor == 10
    succeeded = Producer(finished=True, planned=None, pushes_itself=True, succeeded=True)
    requests, _ = plan_pushes(records, {"cycle": succeeded, "plain": plain}, SWEEP_KEYS, now=1000.0)
    assert [r.partition_key for r in requests] == [SWEEP_KEYS[5]]


def test_the_in_run_tag_counts_only_when_the_run_selects_storefront_sync():
    """A cycle-job run launched from the UI for a subset without storefront_sync is pushed by the sensor."""
    from dagster import DagsterRun, DagsterRunStatus

    tags = {PUSHES_IN_RUN_TAG: PUSHES_IN_RUN, RANGE_START_TAG: SWEEP_KEYS[0], RANGE_END_TAG: SWEEP_KEYS[1]}
    whole = DagsterRun(job_name="price_cycle_job", run_id="a", tags=tags, status=DagsterRunStatus.STARTED)
    subset = DagsterRun(
        job_name="price_cycle_job",
        run_id="b",
        tags=tags,
        status=DagsterRunStatus.STARTED,
        asset_selection=frozenset({AssetKey("storefront_prices")}),
    )
    assert producer_of(whole, SWEEP_KEYS).pushes_itself
    assert not producer_of(subset, SWEEP_KEYS).pushes_itself
    untagged = DagsterRun(job_name="price_sweep_job", run_id="c", tags={}, status=DagsterRunStatus.STARTED)
    assert not producer_of(untagged, SWEEP_KEYS).pushes_itself
