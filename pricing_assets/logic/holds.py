"""Held price changes and approvals as pure functions: what is still held, since when, what an approval
records, and which approvals the storefront has applied (docs/pricing.md; assets in pricing_assets/held.py).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pricing_assets.logic.guard import CHANGE_KEY, approved_changes, release_held
from resources.push_state import APPROVALS_SCHEMA
from resources.schemas import MONEY, UTC_TS

# held_price_changes: every change the guard holds now, across batches, not yet approved.
HELD_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "batch": pl.String(),
    "cost": MONEY,
    "price": MONEY,  # the new target price, held back
    "last_pushed_price": MONEY,  # what the storefront shows
    "change_pct": pl.Float64(),  # display only
    "hold_reason": pl.String(),
    "held_since": UTC_TS,  # first time this exact change was seen held
}


def outstanding_holds(holds: pl.DataFrame, approvals: pl.DataFrame) -> pl.DataFrame:
    """Holds minus the changes already approved (those are released by the next storefront_prices)."""
    if approvals.is_empty() or holds.is_empty():
        return holds
    return holds.join(
        approved_changes(approvals), on=CHANGE_KEY, how="anti", maintain_order="left", nulls_equal=True
    )


def with_held_since(holds: pl.DataFrame, previous: pl.DataFrame | None, now: datetime) -> pl.DataFrame:
    """Holds with `held_since`: kept from the previous table for the same change, else `now`."""
    if previous is None or previous.is_empty():
        since = holds.with_columns(pl.lit(now).cast(UTC_TS).alias("held_since"))
    else:
        earlier = previous.select([*CHANGE_KEY, pl.col("held_since").cast(UTC_TS)]).unique(CHANGE_KEY)
        since = holds.join(
            earlier, on=CHANGE_KEY, how="left", maintain_order="left", nulls_equal=True
        ).with_columns(pl.col("held_since").fill_null(pl.lit(now).cast(UTC_TS)))
    return since.select([pl.col(name).cast(dtype) for name, dtype in HELD_SCHEMA.items()])


def record_approvals(
    holds: pl.DataFrame, log: pl.DataFrame, skus: list[str] | None, now: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the approval log with the chosen holds added, the rows approved now); None approves every hold.

    A SKU that is not held raises ValueError naming it. Approving the same change twice keeps one row.
    """
    released, _ = release_held(holds, skus)
    approved = released.select(
        "sku", "batch", "price", "last_pushed_price", pl.lit(now).cast(UTC_TS).alias("approved_at")
    ).select([pl.col(name).cast(dtype) for name, dtype in APPROVALS_SCHEMA.items()])
    combined = pl.concat([log, approved]).unique(CHANGE_KEY, keep="first", maintain_order=True)
    return combined.sort("approved_at", "sku", maintain_order=True), approved


def prune_consumed(log: pl.DataFrame, acknowledged: pl.DataFrame) -> pl.DataFrame:
    """Approvals whose SKU the storefront still shows at the approved-from price (others are done).

    `acknowledged` is what the storefront acknowledged per SKU (the ledger). An approved flip to
    unavailable (null price) is done once the storefront shows the SKU unavailable, although it keeps
    its last price there.
    """
    if log.is_empty() or acknowledged.is_empty():
        return log
    shown = acknowledged.select(
        "sku", pl.col("price").cast(MONEY).alias("_shown"), pl.col("available").alias("_available")
    ).unique("sku", keep="last")
    flip_done = pl.col("price").is_null() & ~pl.col("_available")
    return (
        log.join(shown, on="sku", how="left", maintain_order="left")
        .filter(
            pl.col("_shown").is_null()
            | ((pl.col("_shown") == pl.col("last_pushed_price")) & ~flip_done.fill_null(False))
        )
        .drop("_shown", "_available")
    )
