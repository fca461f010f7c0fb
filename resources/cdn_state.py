"""The CDN file caches and their state (ETag, Last-Modified, sha256, ...): one typed resource, their writer.

Each `cdn_file` supplier's state is `_cdn_state/<id>.json` under the warehouse root (docs/warehouse.md).
It is internal state, not an analyst table: `supplier_files/<id>` reads it for its conditional GET
and writes it after each attempt; `read_cached_offers` reads `confirmed_at` from it. The cached offers
(`supplier_files/<id>.parquet`, that asset's table) are published here too, laid out by catalog batch,
because asset code only reads the warehouse (`WarehouseTables`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
from dagster import ConfigurableResource

from pricing_assets.logic.batching import assign_batches
from resources.schemas import OFFERS_SCHEMA
from resources.warehouse import Warehouse

STATE_FOLDER = "_cdn_state"
# The cached offers themselves: the supplier_files/<id> asset's table, which this resource publishes.
CACHE_FOLDER = "supplier_files"
# Where deployments before the state folder kept it: a sidecar next to the cached Parquet.
LEGACY_FOLDER = "supplier_files"
LEGACY_NAME = "state"


# The cache's layout columns beside the offers contract: each row's catalog batch, and the number of
# batches it was computed for (a registry with another count reads the whole file instead).
LAYOUT_COLUMNS: dict[str, pl.DataType] = {"batch": pl.String(), "catalog_batches": pl.Int32()}


def write_cached_offers(
    warehouse: Warehouse, supplier_id: str, offers: pl.DataFrame, catalog_batches: int
) -> None:
    """Publish a supplier's offers as its cache, sorted by catalog batch, about one row group per batch."""
    # Measured (bench scale): every sweep run scanned each supplier's whole cached file for its own
    # batches, so a sweep read runs x catalog rows. Laid out by batch, a run's range filter skips the
    # other batches' row groups on their min/max statistics.
    laid_out = (
        assign_batches(offers.select(list(OFFERS_SCHEMA)), catalog_batches)
        .with_columns(pl.lit(catalog_batches, dtype=pl.Int32).alias("catalog_batches"))
        .sort("batch", "sku", maintain_order=True)
    )
    rows_per_batch = max(1, -(-laid_out.height // catalog_batches))
    warehouse.write(laid_out, [CACHE_FOLDER, supplier_id], row_group_size=rows_per_batch)


class CdnCacheState(ConfigurableResource):
    """Each CDN file cache: its state (`_cdn_state/<id>.json`) and its published offers."""

    base_dir: str | None = None

    def _warehouse(self) -> Warehouse:
        # The warehouse's helpers give atomic local writes and single-request S3 reads/writes.
        return Warehouse(base_dir=self.base_dir)

    def path(self, supplier_id: str) -> str:
        """Where a supplier's state lives (for logs and docs)."""
        return str(self._warehouse().root().joinpath(STATE_FOLDER, f"{supplier_id}.json"))

    def load(self, supplier_id: str) -> dict[str, Any]:
        """The supplier's state; empty when none was ever saved.

        A deployment from before the state folder has it at `supplier_files/<id>.state.json`: read
        there until the next save writes the new file.
        """
        warehouse = self._warehouse()
        state = warehouse.read_json_file([STATE_FOLDER, f"{supplier_id}.json"])
        if state is None:
            state = warehouse.read_json([LEGACY_FOLDER, supplier_id], LEGACY_NAME)
        return dict(state or {})

    def publish(self, supplier_id: str, offers: pl.DataFrame, catalog_batches: int) -> None:
        """Atomically replace the supplier's cached offers (its only writer), laid out by batch."""
        write_cached_offers(self._warehouse(), supplier_id, offers, catalog_batches)

    def save(self, supplier_id: str, state: Mapping[str, Any]) -> None:
        """Atomically replace the supplier's state."""
        self._warehouse().write_json_file(dict(state), [STATE_FOLDER, f"{supplier_id}.json"])
