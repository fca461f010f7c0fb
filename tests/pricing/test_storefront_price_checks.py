"""Blocking checks on storefront_prices: a price <= 0 or below the floor fails them and blocks the push."""

from decimal import Decimal

import polars as pl
import pytest
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    BackfillPolicy,
    DagsterInstance,
    Definitions,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)

from pricing_assets.checks import (
    FLOOR_CHECK,
    NONPOSITIVE_CHECK,
    build_storefront_price_checks,
    split_pushable,
)
from pricing_assets.logic.batching import batch_keys
from pricing_assets.storefront_sync import build_storefront_sync_asset
from resources.schemas import MONEY
from resources.warehouse import Warehouse
from tests.pricing.wiring import resources

BATCHES = StaticPartitionsDefinition(batch_keys(16))
RANGE = {"dagster/asset_partition_range_start": "batch-000", "dagster/asset_partition_range_end": "batch-001"}
CONFIG = {"markup": {"min_margin": "0.05"}}


def prices_frame(rows: list[tuple[str, str, str | None, str | None]]) -> pl.DataFrame:
    """storefront_prices rows (sku, batch, cost, price), available, not held."""
    return pl.DataFrame(
        {
            "sku": [r[0] for r in rows],
            "batch": [r[1] for r in rows],
            "cost": [None if r[2] is None else Decimal(r[2]) for r in rows],
            "price": [None if r[3] is None else Decimal(r[3]) for r in rows],
        },
        schema={"sku": pl.String, "batch": pl.String, "cost": MONEY, "price": MONEY},
    ).with_columns(
        available=pl.col("price").is_not_null(),
        supplier=pl.lit("alpha"),
        currency=pl.lit("EUR"),
        last_pushed_price=pl.lit(None, dtype=MONEY),
        change_pct=pl.lit(None, dtype=pl.Float64),
        held=pl.lit(False),
        hold_reason=pl.lit(None, dtype=pl.String),
    )


GOOD = [
    ("SKU-A", "batch-000", "10", "11.50"),
    ("SKU-B", "batch-001", "20", "21.00"),
    ("SKU-C", "batch-001", None, None),
]


def run_with(frame: pl.DataFrame, warehouse_dir, storefront_url: str, tags: dict[str, str] | None = None):
    """A run of a stand-in storefront_prices (returning `frame`), the real checks and the real sync."""

    @asset(name="storefront_prices", partitions_def=BATCHES, backfill_policy=BackfillPolicy.multi_run(16))
    def storefront_prices(context: AssetExecutionContext) -> pl.DataFrame:
        return frame.filter(pl.col("batch").is_in(list(context.partition_keys)))

    sync = build_storefront_sync_asset(BATCHES)
    job = define_asset_job("push", selection=AssetSelection.assets(storefront_prices, sync))
    defs = Definitions(
        assets=[storefront_prices, sync],
        asset_checks=build_storefront_price_checks(),
        jobs=[job],
        resources=resources(warehouse_dir, config=CONFIG, storefront_url=storefront_url),
    )
    return defs.resolve_job_def("push").execute_in_process(
        instance=DagsterInstance.ephemeral(), tags=tags or RANGE, raise_on_error=False
    )


def evaluations(result) -> dict[str, bool]:
    """The storefront_prices checks' verdicts (storefront_sync has its own acknowledgement check)."""
    return {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey("storefront_prices")
    }


def test_valid_prices_pass_both_checks_and_are_pushed(sandbox, warehouse_dir):
    result = run_with(prices_frame(GOOD), warehouse_dir, f"{sandbox.url}/storefront")
    assert result.success
    assert evaluations(result) == {NONPOSITIVE_CHECK: True, FLOOR_CHECK: True}
    pushed = {p["sku"] for push in sandbox.pushes()["pushes"] for p in push["prices"]}
    assert pushed == {"SKU-A", "SKU-B", "SKU-C"}


def test_price_below_floor_in_one_partition_of_a_ranged_run_fails_and_blocks_the_push(sandbox, warehouse_dir):
    # 10.40 < 10 x 1.05: the bad row is in the second partition of the range, so the check must see both.
    bad = [*GOOD, ("SKU-D", "batch-001", "10", "10.40")]
    result = run_with(prices_frame(bad), warehouse_dir, f"{sandbox.url}/storefront")
    assert not result.success
    assert evaluations(result) == {NONPOSITIVE_CHECK: True, FLOOR_CHECK: False}
    (failed,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.metadata["below_floor"].value == 1
    assert failed.metadata["examples"].value == "SKU-D"
    assert failed.metadata["batches"].value == "batch-000..batch-001"
    # The check runs once for the range; it names the partition that failed, with its own count.
    assert failed.metadata["failing_batches"].value == "batch-001: 1"
    passed = next(e for e in result.get_asset_check_evaluations() if e.passed)
    assert passed.metadata["failing_batches"].value == "none"
    assert result.asset_materializations_for_node("storefront_sync") == []
    assert sandbox.pushes()["pushes"] == []


def test_zero_price_fails_the_nonpositive_check_and_blocks_the_push(sandbox, warehouse_dir):
    bad = [*GOOD, ("SKU-E", "batch-000", None, "0")]
    result = run_with(prices_frame(bad), warehouse_dir, f"{sandbox.url}/storefront")
    assert evaluations(result)[NONPOSITIVE_CHECK] is False
    assert result.asset_materializations_for_node("storefront_sync") == []
    assert sandbox.pushes()["pushes"] == []


def test_single_partition_run_checks_only_its_partition(sandbox, warehouse_dir):
    # The bad row is in batch-001; a run of batch-000 alone is fine and pushes batch-000 only.
    bad = [*GOOD, ("SKU-D", "batch-001", "10", "10.40")]
    result = run_with(
        prices_frame(bad), warehouse_dir, f"{sandbox.url}/storefront", {"dagster/partition": "batch-000"}
    )
    assert result.success
    assert evaluations(result) == {NONPOSITIVE_CHECK: True, FLOOR_CHECK: True}
    assert {p["sku"] for push in sandbox.pushes()["pushes"] for p in push["prices"]} == {"SKU-A"}


def test_checks_judge_the_runs_batches_not_every_batch_on_file(sandbox, warehouse_dir):
    # A bad price left in batch-005 by an earlier run is not this run's: it neither fails this run's
    # checks nor blocks its push (Dagster would hand an unpartitioned check every partition on file).
    Warehouse(base_dir=str(warehouse_dir)).write(
        prices_frame([("SKU-Z", "batch-005", "10", "0")]), ["storefront_prices"], "batch-005"
    )
    result = run_with(prices_frame(GOOD), warehouse_dir, f"{sandbox.url}/storefront")
    assert result.success
    assert evaluations(result) == {NONPOSITIVE_CHECK: True, FLOOR_CHECK: True}
    checked = next(e for e in result.get_asset_check_evaluations() if e.check_name == NONPOSITIVE_CHECK)
    assert checked.metadata["checked"].value == 2
    assert checked.metadata["batches"].value == "batch-000..batch-001"
    assert {p["sku"] for push in sandbox.pushes()["pushes"] for p in push["prices"]} == {
        "SKU-A",
        "SKU-B",
        "SKU-C",
    }


@pytest.mark.parametrize(
    ("cost", "price", "pushable"),
    [
        ("10", "10.50", True),
        ("10", "10.4999", False),
        (None, "5", True),
        ("10", "0", False),
        (None, "-1", False),
    ],
)
def test_split_pushable_applies_the_same_invariants_row_by_row(cost, price, pushable):
    frame = prices_frame([("SKU-A", "batch-000", cost, price), ("SKU-OK", "batch-000", "1", "2")])
    ok, blocked = split_pushable(frame, Decimal("0.05"))
    assert ("SKU-A" in ok.get_column("sku").to_list()) is pushable
    assert ("SKU-A" in blocked.get_column("sku").to_list()) is not pushable
    assert "SKU-OK" in ok.get_column("sku").to_list()
