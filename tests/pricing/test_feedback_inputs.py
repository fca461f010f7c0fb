"""storefront_prices' feedback inputs: the tables downstream of it that it reads back, named on its
definition, read only through the typed resources that say so (docs/decisions.md, "Feedback into pricing")."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey

from pricing_assets.definitions import build_defs
from resources import push_state
from resources.push_state import (
    APPROVALS_KEY,
    FEEDBACK_INPUTS,
    FEEDBACK_METADATA_KEY,
    LEDGER_KEY,
    ApprovalLog,
    PushState,
)
from resources.warehouse import Warehouse

PRICES = AssetKey("storefront_prices")


def test_storefront_prices_names_its_feedback_inputs_and_requires_their_resources():
    defs = build_defs()
    graph = defs.resolve_asset_graph()
    prices = defs.resolve_assets_def(PRICES)
    shown = prices.metadata_by_key[PRICES][FEEDBACK_METADATA_KEY].value
    assert set(FEEDBACK_INPUTS) == {"/".join(LEDGER_KEY), "/".join(APPROVALS_KEY)}
    for name in FEEDBACK_INPUTS:
        key = AssetKey.from_user_string(name)
        assert f"`{name}`" in shown
        # Feedback: the table is downstream of storefront_prices, so no asset edge can carry it.
        assert PRICES in graph.get(key).parent_keys
    assert {"push_state", "approval_log"} <= prices.required_resource_keys
    # storefront_sync reads the catalog for Shopify's variant ids: declared, so lineage shows it.
    assert AssetKey("catalog") in graph.get(AssetKey(LEDGER_KEY)).parent_keys


def test_the_feedback_resources_read_exactly_the_named_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(base_dir=str(tmp_path))
    ledger = pl.DataFrame(
        {"sku": ["A"], "price": [Decimal("9.5000")], "available": [True], "supplier": ["alpha"]},
        schema_overrides={"price": pl.Decimal(20, 4)},
    )
    warehouse.write(ledger, LEDGER_KEY, "batch-000")
    read: list[tuple[str, ...]] = []
    original_partitions, original_read = Warehouse.read_partitions, Warehouse.read

    def record_partitions(self: Warehouse, key_path: Sequence[str], partitions: object = None) -> object:
        read.append(tuple(key_path))
        return original_partitions(self, key_path, partitions)

    def record_read(self: Warehouse, key_path: Sequence[str], partition: str | None = None) -> object:
        read.append(tuple(key_path))
        return original_read(self, key_path, partition)

    monkeypatch.setattr(Warehouse, "read_partitions", record_partitions)
    monkeypatch.setattr(Warehouse, "read", record_read)
    acknowledged = PushState(base_dir=str(tmp_path)).acknowledged(["batch-000"])
    assert acknowledged.rows() == [("A", Decimal("9.5000"), True, "alpha")]
    assert ApprovalLog(base_dir=str(tmp_path)).read().is_empty()
    warehouse.write(push_state.empty_approvals(), APPROVALS_KEY)
    assert ApprovalLog(base_dir=str(tmp_path)).read().is_empty()
    assert {"/".join(path) for path in read} == set(FEEDBACK_INPUTS)
