"""How `best_offers` gives each selected SKU its batch and reads offers at their run-catalog row."""

from __future__ import annotations

import polars as pl

from pricing_assets.best_offers import read_run_catalog, with_batches

CATALOG = pl.DataFrame(
    {
        "sku": ["a", "b", "c", "d"],
        "category": ["x"] * 4,
        "active": [True, False, True, True],
        "batch": ["batch-001", "batch-001", "batch-000", "batch-001"],
    }
)


def test_batches_line_up_with_the_selection_of_active_rows() -> None:
    best = pl.DataFrame({"sku": ["a", "c", "d"], "cost": [1, 2, 3]})
    assert with_batches(best, CATALOG).get_column("batch").to_list() == [
        "batch-001",
        "batch-000",
        "batch-001",
    ]


def test_batches_are_joined_when_the_selection_does_not_line_up() -> None:
    # A catalog repeating a SKU: the selection has one row for it, each SKU still gets one batch.
    repeated = pl.concat([CATALOG, CATALOG.head(1).with_columns(batch=pl.lit("batch-009"))])
    best = pl.DataFrame({"sku": ["c", "a", "d"], "cost": [2, 1, 3]})
    got = with_batches(best, repeated)
    assert got.select("sku", "batch").rows() == [("c", "batch-000"), ("a", "batch-001"), ("d", "batch-001")]


def test_the_run_catalog_keeps_each_batch_together_in_catalog_order() -> None:
    rows = read_run_catalog(CATALOG.lazy(), ["batch-000", "batch-001"])
    # Not sorted by batch on file: a stable sort brings batch-001's rows together, in their order.
    assert rows.get_column("sku").to_list() == ["c", "a", "b", "d"]
    assert read_run_catalog(CATALOG.lazy(), ["batch-001"]).get_column("sku").to_list() == ["a", "b", "d"]
