"""storefront_sync never pushes a price that failed the blocking invariants (it runs in its own run)."""

from decimal import Decimal

import polars as pl

from tests.storefront.conftest import sync, sync_metadata, targets, write_targets


def test_price_below_floor_or_nonpositive_is_never_pushed(sandbox, warehouse_dir):
    frame = targets(4).with_columns(
        pl.when(pl.col("sku") == "SKU-000001")
        .then(pl.col("cost") * Decimal("0.5"))  # below cost x (1 + min_margin)
        .when(pl.col("sku") == "SKU-000002")
        .then(pl.lit(Decimal(0)))  # never a zero price
        .otherwise(pl.col("price"))
        .cast(pl.Decimal(20, 4))
        .alias("price")
    )
    write_targets(warehouse_dir, frame)
    result = sync(warehouse_dir, sandbox.url)
    meta = sync_metadata(result)
    assert meta["blocked_invalid"] == 2
    pushed = {entry["sku"] for push in sandbox.pushes()["pushes"] for entry in push["prices"]}
    assert pushed == {"SKU-000000", "SKU-000003"}
