"""Price-change guard, approval release and the blocking checks that gate a push (docs/architecture.md §4)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl

from pricing_assets.logic.markup import below_floor
from resources.config import GuardConfig
from resources.schemas import MONEY

GUARD_COLUMNS = ("last_pushed_price", "change_pct", "held", "hold_reason")
# An approval is for one exact change: this SKU, moving away from that pushed price, to that price.
# A held flip to unavailable has no new price: its key has a null price, and nulls match in the joins.
CHANGE_KEY = ["sku", "price", "last_pushed_price"]
CHANGE_KEY_SCHEMA: dict[str, pl.DataType] = {"sku": pl.String(), "price": MONEY, "last_pushed_price": MONEY}
EXAMPLES = 10  # SKUs listed in a failing check's metadata


def _pct_text(value: Decimal) -> str:
    """A threshold percent as people write it: 30 -> '30', 12.5 -> '12.5'."""
    return format(value.normalize(), "f")


def _fixed(value: pl.Expr, decimals: int) -> pl.Expr:
    """A non-negative float as text with exactly `decimals` decimals (0.8 -> '0.80'), for messages."""
    scaled = (value * 10**decimals).round(0).cast(pl.Int64)
    return pl.concat_str(
        (scaled // 10**decimals).cast(pl.String),
        pl.lit("."),
        (scaled % 10**decimals).cast(pl.String).str.zfill(decimals),
    )


def apply_guard(
    prices: pl.DataFrame, last_pushed: pl.DataFrame, rules: GuardConfig, *, batch_col: str = "batch"
) -> pl.DataFrame:
    """`prices` plus last_pushed_price, change_pct, held and hold_reason (the guard of docs/pricing.md).

    Held: a price change above max_change_pct; every change of a batch where more than
    max_batch_change_share of the SKUs change; every flip to unavailable of a batch where more than
    max_batch_unavailable_share of the SKUs would turn unavailable at once (a bad value or a bad
    supplier must not empty the storefront).
    """
    was_available = "available" in last_pushed.columns and "available" in prices.columns
    last = (
        last_pushed.select(
            "sku",
            pl.col("price").cast(MONEY).alias("last_pushed_price"),
            (pl.col("available") if was_available else pl.lit(None, dtype=pl.Boolean)).alias(
                "_was_available"
            ),
        )
        .filter(pl.col("sku").is_not_null())
        .unique(subset="sku", keep="last", maintain_order=True)
    )
    frame = prices.drop([c for c in GUARD_COLUMNS if c in prices.columns]).join(
        last, on="sku", how="left", maintain_order="left"
    )
    price, previous = pl.col("price"), pl.col("last_pushed_price")
    comparable = price.is_not_null() & previous.is_not_null()
    changed = comparable & (price != previous)
    delta = (price - previous).abs()
    # Exact: |new - old| * 100 > max_change_pct * old, no float involved in the decision.
    too_big = changed & (previous > 0) & (delta * 100 > previous * pl.lit(rules.max_change_pct))
    # A move away from zero (or to a non-positive price) is infinitely large: always held.
    too_big = too_big | (changed & (previous <= 0))
    change_pct = pl.when(comparable & (previous != 0)).then(
        (price.cast(pl.Float64) - previous.cast(pl.Float64)) / previous.cast(pl.Float64) * 100
    )
    # A flip: the storefront shows the SKU available now, and this run would make it unavailable.
    flipped = (
        (pl.col("_was_available").fill_null(False) & ~pl.col("available").fill_null(False))
        if was_available
        else pl.lit(False)
    )

    group = [batch_col] if batch_col in frame.columns else []
    skus_in_batch = pl.len().over(group) if group else pl.len()
    changes_in_batch = changed.sum().over(group) if group else changed.sum()
    flips_in_batch = flipped.sum().over(group) if group else flipped.sum()
    # share > limit  <=>  count > limit * skus; both sides exact decimals.
    skus_exact = skus_in_batch.cast(pl.Decimal(38, 0))
    batch_over = changes_in_batch.cast(pl.Decimal(38, 0)) > skus_exact * pl.lit(rules.max_batch_change_share)
    flips_over = flips_in_batch.cast(pl.Decimal(38, 0)) > skus_exact * pl.lit(
        rules.max_batch_unavailable_share
    )
    share = changes_in_batch.cast(pl.Float64) / skus_in_batch.cast(pl.Float64)
    flip_share = flips_in_batch.cast(pl.Float64) / skus_in_batch.cast(pl.Float64)

    pct_reason = pl.concat_str(
        pl.lit("change "), _fixed(change_pct.abs(), 1), pl.lit(f"% > {_pct_text(rules.max_change_pct)}%")
    )
    pct_reason = pl.when(previous > 0).then(pct_reason).otherwise(pl.lit("change from a non-positive price"))
    share_reason = pl.concat_str(
        pl.lit("batch change share "), _fixed(share, 2), pl.lit(f" > {rules.max_batch_change_share:.2f}")
    )
    flip_reason = pl.concat_str(
        pl.lit("batch unavailable share "),
        _fixed(flip_share, 2),
        pl.lit(f" > {rules.max_batch_unavailable_share:.2f}: would turn unavailable"),
    )
    held_by_pct = too_big
    held_by_share = changed & batch_over
    held_by_flips = flipped & flips_over
    reason = pl.concat_str(
        pl.when(held_by_pct).then(pct_reason),
        pl.when(held_by_share).then(share_reason),
        pl.when(held_by_flips).then(flip_reason),
        separator="; ",
        ignore_nulls=True,
    )
    held = held_by_pct | held_by_share | held_by_flips
    return frame.with_columns(
        change_pct=change_pct,
        held=held.fill_null(False),
        hold_reason=pl.when(held).then(reason),
    ).drop("_was_available")


def release_held(held: pl.DataFrame, skus: list[str] | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Approve held changes: (released rows with held=False, rows still held); None releases all."""
    if skus is None:
        wanted = held.get_column("sku").unique().to_list()
    else:
        wanted = list(dict.fromkeys(skus))
        unknown = sorted(set(wanted) - set(held.get_column("sku").to_list()))
        if unknown:
            shown = ", ".join(unknown[:EXAMPLES]) + (" ..." if len(unknown) > EXAMPLES else "")
            raise ValueError(f"{len(unknown)} SKU(s) have no held price change: {shown}")
    chosen = pl.col("sku").is_in(wanted)
    released = held.filter(chosen).with_columns(held=pl.lit(False), hold_reason=pl.lit(None, dtype=pl.String))
    return released, held.filter(~chosen)


def nonpositive_price() -> pl.Expr:
    """True for a row priced at zero or less (an unavailable SKU has no price, and is not one)."""
    return pl.col("price").is_not_null() & (pl.col("price") <= 0)


def approved_changes(approvals: pl.DataFrame) -> pl.DataFrame:
    """The distinct approved changes (sku, price, last_pushed_price) of an approval log."""
    return approvals.select([pl.col(name).cast(CHANGE_KEY_SCHEMA[name]) for name in CHANGE_KEY]).unique()


def release_approved(guarded: pl.DataFrame, approvals: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Guarded rows with approved holds released (held=False), and how many were released."""
    if approvals.is_empty() or guarded.is_empty():
        return guarded, 0
    indexed = guarded.with_row_index("_row")
    held = indexed.filter(pl.col("held"))
    matched = held.join(approved_changes(approvals), on=CHANGE_KEY, how="semi", nulls_equal=True)
    if matched.is_empty():
        return guarded, 0
    released, still_held = release_held(held, matched.get_column("sku").to_list())
    untouched = indexed.filter(~pl.col("held"))
    result = pl.concat([untouched, released, still_held], how="vertical_relaxed").sort("_row")
    return result.drop("_row"), released.height


def check_no_nonpositive_price(frame: pl.DataFrame) -> tuple[bool, dict[str, Any]]:
    """Blocking check: no SKU gets a price of zero or less (unavailable SKUs have no price)."""
    bad = frame.filter(nonpositive_price())
    return bad.height == 0, {
        "nonpositive_prices": bad.height,
        "checked": int(frame.get_column("price").is_not_null().sum()),
        "examples": bad.get_column("sku").head(EXAMPLES).to_list(),
    }


def check_not_below_floor(frame: pl.DataFrame, min_margin: Decimal) -> tuple[bool, dict[str, Any]]:
    """Blocking check: no price is below cost x (1 + min_margin), compared exactly."""
    priced = pl.col("price").is_not_null() & pl.col("cost").is_not_null()
    bad = frame.filter(below_floor(min_margin))
    return bad.height == 0, {
        "below_floor": bad.height,
        "checked": int(frame.select(priced.sum()).item()),
        "min_margin": str(min_margin),
        "examples": bad.get_column("sku").head(EXAMPLES).to_list(),
    }
