"""Guard and approval end to end: a >30% change is held, approve_held_prices releases exactly it."""

from decimal import Decimal

import polars as pl
import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, define_asset_job

from pricing_assets.definitions import build_definitions_without_resources
from pricing_assets.held import HELD_SCHEMA
from resources.config import load_registry
from resources.push_state import ApprovalLog
from resources.warehouse import Warehouse
from tests.pricing.wiring import (
    bind,
    resources,
    skus_in_batch,
    write_catalog,
    write_offers,
)

BATCH = "batch-000"
CONFIG = {
    "markup": {"percent": "15", "rounding": {"mode": "none"}},
    # Only the per-SKU rule here: the batch share rule is tested in tests/pricing_logic.
    "guard": {"max_change_pct": "30", "max_batch_change_share": "1"},
}


class Shop:
    """The pricing location against a temp warehouse and the sandbox storefront, one batch of 4 SKUs."""

    def __init__(self, sandbox, warehouse_dir) -> None:
        registry = load_registry()
        self.sandbox = sandbox
        self.warehouse = Warehouse(base_dir=str(warehouse_dir))
        self.skus = skus_in_batch(BATCH, registry.catalog_batches, 4)
        write_catalog(self.warehouse, self.skus, registry.catalog_batches)
        price_and_push = define_asset_job(
            "price_and_push",
            selection=AssetSelection.assets("best_offers", "storefront_prices", "storefront_sync"),
        )
        self.defs = bind(
            Definitions.merge(
                build_definitions_without_resources(registry), Definitions(jobs=[price_and_push])
            ),
            resources(warehouse_dir, config=CONFIG, storefront_url=f"{sandbox.url}/storefront"),
        )
        self.instance = DagsterInstance.ephemeral()

    def offer(self, **prices: str) -> None:
        """Set alpha's offers for the batch: sku index -> price (the others keep 10)."""
        table = {sku: "10" for sku in self.skus}
        table.update({self.skus[int(index[1:])]: price for index, price in prices.items()})
        write_offers(self.warehouse, "alpha", BATCH, table)

    def sweep(self) -> pl.DataFrame:
        """best_offers -> storefront_prices (+ checks) -> storefront_sync for the batch."""
        result = self.defs.resolve_job_def("price_and_push").execute_in_process(
            instance=self.instance, partition_key=BATCH
        )
        assert result.success
        return self.warehouse.read(["storefront_prices"], BATCH)

    def run(self, job: str, config: dict | None = None):
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, run_config=config or {}, raise_on_error=False
        )

    def approve(self, **config):
        return self.run("approve_held_prices", {"ops": {"price_approvals": {"config": config}}})

    def held(self) -> pl.DataFrame:
        assert self.run("held_price_changes_job").success
        return self.warehouse.read(["held_price_changes"])

    def pushed(self) -> dict[str, list[Decimal]]:
        """Every price the storefront received, per SKU, in order."""
        out: dict[str, list[Decimal]] = {}
        for push in self.sandbox.pushes()["pushes"]:
            for entry in push["prices"]:
                out.setdefault(entry["sku"], []).append(Decimal(entry["price"]))
        return out


@pytest.fixture
def shop(sandbox, warehouse_dir) -> Shop:
    shop = Shop(sandbox, warehouse_dir)
    shop.offer()
    shop.sweep()
    assert shop.pushed() == {sku: [Decimal("11.5")] for sku in shop.skus}
    return shop


def row(prices: pl.DataFrame, sku: str) -> dict:
    return prices.filter(pl.col("sku") == sku).row(0, named=True)


def test_big_change_is_held_then_approval_releases_exactly_that_change(shop):
    a, b = shop.skus[0], shop.skus[1]
    shop.offer(s0="20", s1="10.5")  # a: 11.50 -> 23.00 (+100 %), b: 11.50 -> 12.075 (+5 %)
    prices = shop.sweep()
    assert row(prices, a)["held"] and row(prices, a)["hold_reason"] == "change 100.0% > 30%"
    assert not row(prices, b)["held"]
    assert shop.pushed()[a] == [Decimal("11.5")]  # the held change was not pushed
    assert shop.pushed()[b] == [Decimal("11.5"), Decimal("12.075")]

    held = shop.held()
    assert held.schema == pl.Schema(HELD_SCHEMA)
    assert held.select("sku", "batch", "price", "last_pushed_price").rows() == [
        (a, BATCH, Decimal("23"), Decimal("11.5"))
    ]
    assert held.get_column("held_since").null_count() == 0

    # A typo must not pass silently: the error names the SKU, and nothing is recorded.
    refused = shop.approve(skus=[a, "SKU-TYPO"])
    assert not refused.success
    assert "SKU-TYPO" in str(refused.failure_data_for_node("price_approvals").error)
    assert ApprovalLog(base_dir=shop.warehouse.base_dir).read().is_empty()

    approved = shop.approve(skus=[a])
    assert approved.success
    assert ApprovalLog(base_dir=shop.warehouse.base_dir).read().select(
        "sku", "price", "last_pushed_price"
    ).rows() == [(a, Decimal("23"), Decimal("11.5"))]
    assert shop.held().is_empty()  # approved, waiting for the next storefront_prices

    prices = shop.sweep()
    assert not row(prices, a)["held"] and row(prices, a)["hold_reason"] is None
    assert shop.pushed()[a] == [Decimal("11.5"), Decimal("23")]

    # The approval was for 11.50 -> 23.00 only: a later big move is held again.
    shop.offer(s0="40", s1="10.5")
    prices = shop.sweep()
    assert row(prices, a)["held"]
    assert shop.pushed()[a] == [Decimal("11.5"), Decimal("23")]
    assert shop.held().get_column("sku").to_list() == [a]


def test_approval_is_for_the_approved_price_only(shop):
    a = shop.skus[0]
    shop.offer(s0="20")
    shop.sweep()
    assert shop.approve(skus=[a]).success  # approves 11.50 -> 23.00
    shop.offer(s0="30")  # before the next sweep the cost moves again: 11.50 -> 34.50
    prices = shop.sweep()
    assert row(prices, a)["held"]
    assert shop.pushed()[a] == [Decimal("11.5")]


def test_approve_all_and_config_errors(shop):
    a, b = shop.skus[0], shop.skus[2]
    shop.offer(s0="20", s2="5")  # a +100 %, b: 11.50 -> 5.75 (-50 %)
    shop.sweep()
    assert sorted(shop.held().get_column("sku").to_list()) == sorted([a, b])
    nothing = shop.approve()
    assert not nothing.success
    assert "nothing to approve" in str(nothing.failure_data_for_node("price_approvals").error)
    assert shop.approve(all=True).success
    prices = shop.sweep()
    assert not prices.get_column("held").any()
    assert shop.pushed()[a][-1] == Decimal("23") and shop.pushed()[b][-1] == Decimal("5.75")
    # Again with nothing held: approving everything is a no-op, approving a SKU names it.
    assert shop.approve(all=True).success
    refused = shop.approve(skus=[a])
    assert a in str(refused.failure_data_for_node("price_approvals").error)
