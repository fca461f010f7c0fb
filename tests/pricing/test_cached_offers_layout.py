"""The CDN file's cache is laid out by catalog batch, so a run reads its own batches' row groups only."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pyarrow.parquet as pq

from pricing_assets.logic.batching import assign_batches
from pricing_assets.supplier_files import cache_key, read_cached_offers
from resources.cdn_state import write_cached_offers
from resources.schemas import OFFERS_SCHEMA
from resources.warehouse import Warehouse

BATCHES = 8


def offers(n: int = 4_000) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sku": [f"SKU-{i:06d}" for i in range(n)],
            "supplier": ["delta"] * n,
            "price": [Decimal(i % 97 + 1) for i in range(n)],
            "currency": ["EUR"] * n,
            "stock": [i % 5 for i in range(n)],
            "in_stock": [i % 5 > 0 for i in range(n)],
            "fetched_at": [datetime(2026, 12, 1, tzinfo=UTC)] * n,
        },
        schema=OFFERS_SCHEMA,
    )


def test_a_runs_batches_are_read_alone_and_give_what_a_full_read_gives(tmp_path):
    warehouse = Warehouse(base_dir=str(tmp_path))
    feed = offers()
    write_cached_offers(warehouse, "delta", feed, BATCHES)

    # About one row group per batch's worth of rows, sorted by batch: a run's range overlaps only the
    # row groups of its own batches (and their neighbours'), which the min/max statistics let a read
    # skip. An unsorted file would have every row group span every batch.
    meta = pq.ParquetFile(warehouse.path(cache_key("delta"))).metadata
    column = meta.schema.names.index("batch")
    spans = [
        (meta.row_group(g).column(column).statistics.min, meta.row_group(g).column(column).statistics.max)
        for g in range(meta.num_row_groups)
    ]
    assert BATCHES <= meta.num_row_groups <= BATCHES + 1
    run = ["batch-002", "batch-003"]
    needed = [span for span in spans if span[0] <= run[-1] and span[1] >= run[0]]
    assert len(needed) <= len(run) + 2 < meta.num_row_groups

    catalog = assign_batches(feed.select("sku"), BATCHES)
    skus = catalog.filter(pl.col("batch").is_in(run)).get_column("sku")
    laid_out = read_cached_offers(warehouse, "delta", skus, batches=run, catalog_batches=BATCHES)
    full = read_cached_offers(warehouse, "delta", skus)
    assert laid_out.sort("sku").equals(full.sort("sku"))
    assert laid_out.height == skus.len() and laid_out.schema == pl.Schema(OFFERS_SCHEMA)
    # A registry with another batch count cannot trust the layout: it reads the whole file, same rows.
    other = read_cached_offers(warehouse, "delta", skus, batches=run, catalog_batches=BATCHES * 2)
    assert other.sort("sku").equals(full.sort("sku"))


def test_a_cache_written_before_the_layout_is_still_read_whole(tmp_path):
    warehouse = Warehouse(base_dir=str(tmp_path))
    feed = offers(500)
    warehouse.write(feed, cache_key("delta"))  # the layout before this change: offers only
    skus = feed.get_column("sku").head(50)
    got = read_cached_offers(warehouse, "delta", skus, batches=["batch-000"], catalog_batches=BATCHES)
    assert got.sort("sku").equals(feed.head(50).sort("sku"))
