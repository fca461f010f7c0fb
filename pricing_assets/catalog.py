"""The `catalog` asset: the SKUs to price, from the storefront's catalog endpoint or a file."""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue, asset
from pydantic import Field

from pricing_assets import OWNERS
from pricing_assets.logic.batching import assign_batches
from resources.schemas import CATALOG_SCHEMA, column_schema, conform_filling
from resources.storefront import Storefront


class CatalogConfig(Config):
    """Where the catalog comes from: the storefront (default) or a CSV/Parquet file."""

    file: str | None = Field(default=None, description="CSV or Parquet file instead of the storefront")


def read_catalog_file(path: str) -> pl.DataFrame:
    """Read a catalog CSV or Parquet file into the catalog contract."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"catalog file not found: {file}")
    frame = pl.read_parquet(file) if file.suffix == ".parquet" else pl.read_csv(file, infer_schema=False)
    if "active" in frame.columns and frame.schema["active"] == pl.String:
        frame = frame.with_columns(pl.col("active").str.to_lowercase().is_in(["true", "1", "yes"]))
    return conform_filling(frame, CATALOG_SCHEMA, {"active": True})


def build_catalog_asset(batches: int) -> AssetsDefinition:
    """The catalog asset, assigning each SKU to one of `batches` partitions."""

    @asset(
        name="catalog",
        group_name="pricing",
        owners=OWNERS,
        kinds={"polars", "parquet"},
        # Not partitioned, but every SKU carries the batch it is assigned to.
        metadata=column_schema(CATALOG_SCHEMA, partition_column="batch"),
    )
    def catalog(
        context: AssetExecutionContext, config: CatalogConfig, storefront: Storefront
    ) -> pl.DataFrame:
        """Every SKU the shop sells, with its category, active flag and catalog batch."""
        frame = read_catalog_file(config.file) if config.file else storefront.fetch_catalog()
        duplicates = frame.height - frame.get_column("sku").n_unique()
        if duplicates:
            raise ValueError(f"catalog has {duplicates} duplicate SKUs")
        # Sorted by batch: a run reads its own batches' row groups of the catalog, not all of it
        # (bench scale: 4 supplier steps x 10 runs each read the whole 10M-row catalog otherwise).
        frame = assign_batches(frame, batches).sort("batch", "sku")
        context.add_output_metadata(
            {
                "skus": MetadataValue.int(frame.height),
                "active": MetadataValue.int(int(frame.get_column("active").sum())),
                "batches": MetadataValue.int(batches),
                "source": MetadataValue.text(config.file or "storefront"),
            }
        )
        return frame

    return catalog
