"""The catalog asset: from the storefront's paginated endpoint, or from a CSV/Parquet file in config."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import materialize

from pricing_assets.catalog import build_catalog_asset, read_catalog_file
from pricing_assets.logic.batching import batch_index, batch_key
from resources.storefront import Storefront
from resources.warehouse import WarehouseIOManager


def resources(tmp_path, url: str = "http://127.0.0.1:9") -> dict[str, object]:
    return {
        "io_manager": WarehouseIOManager(base_dir=str(tmp_path)),
        "storefront": Storefront(url=url, webhook_secret="unused"),
    }


def test_catalog_from_a_csv_file_named_in_config(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("sku,title,category,active\nA-1,One,games,true\nB-2,Two,ebooks,no\n")
    # The storefront URL is unreachable: a file source must not touch it.
    result = materialize(
        [build_catalog_asset(4)],
        resources=resources(tmp_path),
        run_config={"ops": {"catalog": {"config": {"file": str(path)}}}},
    )
    assert result.success
    stored = pl.read_parquet(tmp_path / "catalog.parquet")
    assert stored.get_column("sku").to_list() == ["A-1", "B-2"]
    assert stored.get_column("active").to_list() == [True, False]
    assert stored.get_column("batch").to_list() == [batch_key(batch_index(s, 4)) for s in ("A-1", "B-2")]


def test_catalog_from_a_parquet_file_fills_missing_columns(tmp_path):
    path = tmp_path / "catalog.parquet"
    pl.DataFrame({"sku": ["X"], "category": ["games"]}).write_parquet(path)
    frame = read_catalog_file(str(path))
    assert frame.row(0, named=True) == {
        "sku": "X",
        "title": None,
        "category": "games",
        "active": True,
        "product_id": None,
        "variant_id": None,
    }


def test_missing_catalog_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="catalog file not found"):
        read_catalog_file(str(tmp_path / "nope.csv"))


def test_catalog_from_the_storefront_by_default(sandbox, tmp_path):
    result = materialize(
        [build_catalog_asset(16)], resources=resources(tmp_path, f"{sandbox.url}/storefront")
    )
    assert result.success
    assert pl.read_parquet(tmp_path / "catalog.parquet").height == 400  # the sandbox's catalog size
