"""The storefront_push sensor: run keys from materializations, cursor, one push per materialization."""

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
    asset,
    build_sensor_context,
    instance_for_test,
    io_manager,
    materialize,
)

from pricing_assets.push_sensor import (
    SYNC_JOB_NAME,
    build_storefront_push_sensor,
    build_storefront_sync_job,
    run_key,
)
from resources.runtime import RuntimeConfig
from resources.shopify import ShopifyStorefront
from resources.storefront import Storefront
from resources.warehouse import Warehouse, WarehouseIOManager
from tests.storefront.conftest import BATCHES, PRICES_SPEC, SYNC_ASSET

JOB = build_storefront_sync_job(BATCHES)
SENSOR = build_storefront_push_sensor(JOB)


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


def materialized(instance, partition: str) -> int:
    """Record a storefront_prices materialization of one partition; return its storage id."""
    instance.report_runless_asset_event(AssetMaterialization("storefront_prices", partition=partition))
    records = instance.fetch_materializations(AssetKey("storefront_prices"), limit=1).records
    return records[0].storage_id


def evaluate(instance, cursor: str | None) -> SensorResult | SkipReason:
    return SENSOR(build_sensor_context(instance=instance, cursor=cursor))


def test_each_materialization_requests_one_sync_of_its_partition(instance):
    first = materialized(instance, "batch-000")
    second = materialized(instance, "batch-001")
    result = evaluate(instance, cursor=None)
    assert isinstance(result, SensorResult)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("batch-000", f"storefront_prices:batch-000:{first}"),
        ("batch-001", f"storefront_prices:batch-001:{second}"),
    ]
    assert result.cursor == str(second)
    assert result.run_requests[0].tags["storefront/trigger_storage_id"] == str(first)

    # The same tick evaluated again from the same cursor yields the same run keys (deduplicated by Dagster).
    replay = evaluate(instance, cursor=None)
    assert [r.run_key for r in replay.run_requests] == [r.run_key for r in result.run_requests]

    # From the advanced cursor there is nothing new, until a new materialization arrives.
    assert isinstance(evaluate(instance, cursor=result.cursor), SkipReason)
    third = materialized(instance, "batch-000")
    later = evaluate(instance, cursor=result.cursor)
    assert [r.run_key for r in later.run_requests] == [run_key("batch-000", third)]
    assert later.cursor == str(third)


def test_several_materializations_of_one_partition_in_a_tick_coalesce_to_the_newest(instance):
    materialized(instance, "batch-001")
    newest = materialized(instance, "batch-001")
    result = evaluate(instance, cursor=None)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("batch-001", run_key("batch-001", newest))
    ]


def test_a_real_run_triggers_a_sync_request(instance):
    @asset(name="storefront_prices", partitions_def=BATCHES)
    def storefront_prices() -> pl.DataFrame:
        return pl.DataFrame({"sku": ["A"]})

    class NullIO(IOManager):
        def handle_output(self, context, obj):
            return None

        def load_input(self, context):
            return None

    @io_manager
    def null_io():
        return NullIO()

    resources = {"io_manager": null_io}
    run = materialize([storefront_prices], partition_key="batch-001", instance=instance, resources=resources)
    result = evaluate(instance, cursor=None)
    (request,) = result.run_requests
    assert isinstance(request, RunRequest) and request.partition_key == "batch-001"
    assert request.tags["storefront/trigger_run_id"] == run.run_id


def test_sensor_targets_the_sync_job_and_definitions_validate():
    resources = {
        "io_manager": WarehouseIOManager(base_dir="unused"),
        "warehouse": Warehouse(base_dir="unused"),
        "service_config": RuntimeConfig(),
        "storefront": Storefront(url="http://127.0.0.1:9", webhook_secret="unused"),
        "shopify": ShopifyStorefront(),
    }
    defs = Definitions(assets=[SYNC_ASSET, PRICES_SPEC], jobs=[JOB], sensors=[SENSOR], resources=resources)
    job = defs.resolve_job_def(SYNC_JOB_NAME)
    assert [key.to_user_string() for key in job.asset_layer.selected_asset_keys] == ["storefront_sync"]
    assert SENSOR.job_name == SYNC_JOB_NAME
    assert job.partitions_def.get_partition_keys() == BATCHES.get_partition_keys()
