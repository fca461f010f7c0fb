"""A backfill of every catalog batch with one batch failing, then only the failed range re-run.

Simulated the way Dagster's backfill daemon launches a BackfillPolicy.multi_run backfill: the requested
partitions are cut into contiguous ranges of at most max_partitions_per_run, and each range is one run
tagged dagster/asset_partition_range_start/_end. "Re-execute failed partitions" is then a backfill of
what did not materialize, launched the same way. Runs are executed in process against one instance.
tests/integration/test_backfill_daemon.py drives the same scenario through the webserver and daemon.
"""

import polars as pl
from dagster import DagsterInstance

from pricing_assets.definitions import build_definitions_without_resources
from pricing_assets.sweep import RANGE_END_TAG, RANGE_START_TAG
from resources.config import load_registry
from resources.suppliers import SupplierClients
from tests.pricing.wiring import bind, materialized_partitions, resources, skus_in_batch

BATCHES = 48  # three runs of 16 (the pricing assets' max_partitions_per_run)
FAILING_BATCH = "batch-020"
CONFIG = {"suppliers": {"gamma": {"enabled": False}}}  # two live suppliers keep the test fast


class FaultySuppliers(SupplierClients):
    """The real supplier clients, except that a request containing a poisoned SKU raises."""

    poisoned: list[str] = []

    def fetch_offers(self, supplier_id: str, skus: list[str] | pl.DataFrame):
        asked = skus.get_column("sku").to_list() if isinstance(skus, pl.DataFrame) else skus
        hit = sorted(set(asked) & set(self.poisoned))
        if hit:
            raise RuntimeError(f"injected fault for {hit[0]}")
        return super().fetch_offers(supplier_id, skus)


def ranged_runs(keys: list[str], wanted: set[str], max_per_run: int) -> list[tuple[str, str]]:
    """Contiguous ranges of `wanted` (in partition order), each at most max_per_run long."""
    ranges: list[list[str]] = []
    previous = None
    for index, key in enumerate(keys):
        if key not in wanted:
            continue
        if ranges and previous == index - 1 and len(ranges[-1]) < max_per_run:
            ranges[-1].append(key)
        else:
            ranges.append([key])
        previous = index
    return [(chunk[0], chunk[-1]) for chunk in ranges]


def test_backfill_with_one_failing_batch_then_rerun_of_only_the_failed_range(sandbox, warehouse_dir):
    registry = load_registry().model_copy(update={"catalog_batches": BATCHES})
    definitions = build_definitions_without_resources(registry)
    poisoned = [s for s in skus_in_batch(FAILING_BATCH, BATCHES, 400) if int(s[4:]) < 400][:1]
    assert poisoned, "the sandbox catalog must have a SKU in the failing batch"
    url = f"{sandbox.url}/storefront"
    faulty = bind(
        definitions,
        resources(
            warehouse_dir, config=CONFIG, storefront_url=url, suppliers=FaultySuppliers(poisoned=poisoned)
        ),
    )
    healthy = bind(definitions, resources(warehouse_dir, config=CONFIG, storefront_url=url))
    instance = DagsterInstance.ephemeral()
    assert (
        healthy.resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[healthy.resolve_assets_def("catalog").key])
        .success
    )

    sweep = faulty.resolve_job_def("price_sweep_job")
    keys = sweep.partitions_def.get_partition_keys()
    policy = healthy.resolve_assets_def("storefront_prices").backfill_policy
    assert policy is not None and policy.max_partitions_per_run == 16
    plan = ranged_runs(keys, set(keys), policy.max_partitions_per_run)
    assert plan == [("batch-000", "batch-015"), ("batch-016", "batch-031"), ("batch-032", "batch-047")]

    outcomes = {}
    for start, end in plan:
        result = sweep.execute_in_process(
            instance=instance, tags={RANGE_START_TAG: start, RANGE_END_TAG: end}, raise_on_error=False
        )
        outcomes[(start, end)] = result.success
        if not result.success:
            error = result.failure_data_for_node("supplier_offers__alpha").error
            assert f"injected fault for {poisoned[0]}" in str(error)
    assert outcomes == {plan[0]: True, plan[1]: False, plan[2]: True}

    done = materialized_partitions(instance, "storefront_prices")
    failed_range = set(keys[16:32])
    assert done == set(keys) - failed_range
    assert materialized_partitions(instance, "best_offers") == done
    for batch in done:
        assert (warehouse_dir / "storefront_prices" / f"{batch}.parquet").exists()
    assert not (warehouse_dir / "storefront_prices" / f"{FAILING_BATCH}.parquet").exists()

    # Re-execute only the failed partitions, after the fault is gone: exactly one run, the failed range.
    retry = ranged_runs(keys, set(keys) - done, policy.max_partitions_per_run)
    assert retry == [("batch-016", "batch-031")]
    rerun = healthy.resolve_job_def("price_sweep_job")
    for start, end in retry:
        assert rerun.execute_in_process(
            instance=instance, tags={RANGE_START_TAG: start, RANGE_END_TAG: end}
        ).success
    assert materialized_partitions(instance, "storefront_prices") == set(keys)
    assert all((warehouse_dir / "storefront_prices" / f"{batch}.parquet").exists() for batch in keys)


def test_ranged_runs_cuts_contiguous_chunks():
    keys = [f"b{i}" for i in range(10)]
    assert ranged_runs(keys, {"b0", "b1", "b2", "b5", "b6", "b9"}, 2) == [
        ("b0", "b1"),
        ("b2", "b2"),
        ("b5", "b6"),
        ("b9", "b9"),
    ]
