"""The pricing core: best offer -> storefront price (markup, rounding, floor, guard, approvals), pure.

`storefront_prices`, the `debug_sku` job and the sweep benchmark's baseline all call `price_offers`, so
what the debug job explains is what the asset computes (docs/pricing.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pricing_assets.logic.guard import apply_guard, release_approved
from pricing_assets.logic.markup import apply_markup
from resources.config import GuardConfig, MarkupConfig


@dataclass(frozen=True)
class Priced:
    """Storefront prices with the guard's columns, and which rows an approval released from a hold."""

    prices: pl.DataFrame
    released: pl.Series


def price_offers(
    best: pl.DataFrame,
    *,
    markup: MarkupConfig,
    guard: GuardConfig,
    store_currency: str,
    last_pushed: pl.DataFrame,
    approvals: pl.DataFrame,
) -> Priced:
    """Marked up, rounded and floored prices in the store currency, guarded against the last push."""
    priced = apply_markup(best, markup).with_columns(pl.lit(store_currency).alias("currency"))
    guarded = apply_guard(priced, last_pushed, guard)
    was_held = guarded.get_column("held")
    # Approved changes (approve_held_prices) are released here, exactly the approved (sku, price).
    guarded, _ = release_approved(guarded, approvals)
    return Priced(prices=guarded, released=was_held & ~guarded.get_column("held"))
