"""A bad value or a bad supplier cannot empty the storefront: staleness_ttl <= 0 is refused when read,
and a valid value that would still turn most of a batch unavailable is held, visibly, until fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, define_asset_job

from pricing_assets.definitions import build_definitions_without_resources
from resources.config import load_registry
from resources.push_state import ApprovalLog
from resources.service_config import ServiceConfigResource
from resources.warehouse import Warehouse
from tests.pricing.wiring import (
    bind,
    resources,
    skus_in_batch,
    write_catalog,
    write_offers,
)

BATCH = "batch-000"
BASE = {"markup": {"percent": "15", "rounding": {"mode": "none"}}}
GOOD = {**BASE, "staleness_ttl": "PT2H"}  # the offers below are an hour old


class Shop:
    """Pricing and push for one batch of 4 SKUs; SERVICE_CONFIG is read from the env at every run."""

    def __init__(self, sandbox, warehouse_dir, monkeypatch: pytest.MonkeyPatch) -> None:
        registry = load_registry()
        self.sandbox = sandbox
        self.monkeypatch = monkeypatch
        self.warehouse = Warehouse(base_dir=str(warehouse_dir))
        self.skus = skus_in_batch(BATCH, registry.catalog_batches, 4)
        write_catalog(self.warehouse, self.skus, registry.catalog_batches)
        fetched = datetime.now(UTC) - timedelta(hours=1)
        write_offers(self.warehouse, "alpha", BATCH, dict.fromkeys(self.skus, "10"), fetched_at=fetched)
        job = define_asset_job(
            "price_and_push",
            selection=AssetSelection.assets("best_offers", "storefront_prices", "storefront_sync"),
        )
        bound = resources(warehouse_dir, storefront_url=f"{sandbox.url}/storefront")
        bound["service_config"] = ServiceConfigResource()  # SERVICE_CONFIG from the environment, as deployed
        self.defs = bind(
            Definitions.merge(build_definitions_without_resources(registry), Definitions(jobs=[job])), bound
        )
        self.instance = DagsterInstance.ephemeral()

    def configure(self, config: dict[str, Any]) -> None:
        self.monkeypatch.setenv("SERVICE_CONFIG", json.dumps(config))

    def sweep(self):
        return self.defs.resolve_job_def("price_and_push").execute_in_process(
            instance=self.instance, partition_key=BATCH, raise_on_error=False
        )

    def run(self, job: str, config: dict | None = None):
        return self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance, run_config=config or {}, raise_on_error=False
        )

    def held(self) -> pl.DataFrame:
        assert self.run("held_price_changes_job").success
        return self.warehouse.read(["held_price_changes"])

    def storefront(self) -> dict[str, tuple[str, bool]]:
        """What the storefront shows now: sku -> (price, available)."""
        return {sku: (e["price"], e["available"]) for sku, e in self.sandbox.pushes()["prices"].items()}


@pytest.fixture
def shop(sandbox, warehouse_dir, monkeypatch) -> Shop:
    shop = Shop(sandbox, warehouse_dir, monkeypatch)
    shop.configure(GOOD)
    assert shop.sweep().success
    assert shop.storefront() == dict.fromkeys(shop.skus, ("11.5000", True))
    return shop


def test_staleness_ttl_zero_is_refused_then_a_ttl_that_empties_the_batch_is_held_until_fixed(shop):
    right = dict.fromkeys(shop.skus, ("11.5000", True))
    pushes = len(shop.sandbox.pushes()["pushes"])

    # 1. staleness_ttl 0: every offer would be stale. Refused when read, naming source and key.
    shop.configure({**BASE, "staleness_ttl": 0})
    refused = shop.sweep()
    assert not refused.success
    failure = next(event for event in refused.all_events if event.is_step_failure)
    assert failure.step_failure_data.user_failure_data.description == (
        "SERVICE_CONFIG (environment variable): key 'staleness_ttl': must be more than 0 seconds "
        "(0 or less would make every offer stale)"
    )

    # 2. A valid but wrong value (30 min against hour-old offers): every SKU would turn unavailable.
    shop.configure({**BASE, "staleness_ttl": "PT30M"})
    assert shop.sweep().success
    prices = shop.warehouse.read(["storefront_prices"], BATCH)
    assert prices.get_column("held").to_list() == [True] * 4
    held = shop.held()
    assert sorted(held.get_column("sku").to_list()) == sorted(shop.skus)
    assert set(held.get_column("hold_reason").to_list()) == {
        "batch unavailable share 1.00 > 0.25: would turn unavailable"
    }
    ledger = shop.warehouse.read(["storefront_sync"], BATCH)
    assert set(ledger.get_column("pending_status").to_list()) == {"held"}
    assert shop.storefront() == right and len(shop.sandbox.pushes()["pushes"]) == pushes

    # 3. Fixed: nothing held, nothing pushed (the storefront was never wrong), and it holds the right prices.
    shop.configure(GOOD)
    assert shop.sweep().success
    assert shop.held().is_empty()
    assert shop.storefront() == right
    assert len(shop.sandbox.pushes()["pushes"]) == pushes
    assert shop.sandbox.pushes()["repeated_versions"] == 0
    assert shop.warehouse.read(["storefront_sync"], BATCH).get_column("pending_status").null_count() == 4


def test_an_approved_flip_is_pushed_as_unavailable_once(shop):
    """When the supplier really is gone, approving the hold lets availability through (price kept)."""
    shop.configure({**BASE, "staleness_ttl": "PT30M"})
    assert shop.sweep().success
    assert shop.run("approve_held_prices", {"ops": {"price_approvals": {"config": {"all": True}}}}).success
    assert ApprovalLog(base_dir=shop.warehouse.base_dir).read().get_column("price").null_count() == 4
    assert shop.held().is_empty()
    assert shop.sweep().success
    assert shop.storefront() == dict.fromkeys(shop.skus, ("11.5000", False))
    # The approval is consumed: the SKUs are shown unavailable, so a later approval run prunes it.
    assert shop.run("approve_held_prices", {"ops": {"price_approvals": {"config": {"all": True}}}}).success
    assert ApprovalLog(base_dir=shop.warehouse.base_dir).read().is_empty()
    assert Decimal(shop.storefront()[shop.skus[0]][0]) == Decimal("11.5")
