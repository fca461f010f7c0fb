"""Storefront price from cost: markup, rounding and the margin floor, in exact money (docs/pricing.md)."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from resources.config import MarkupConfig
from resources.schemas import MONEY

MONEY_DECIMALS = 4
# Percent rules with more decimals than this are rejected rather than silently rounded.
MAX_RULE_DECIMALS = 8


def _decimals(value: Decimal) -> int:
    """How many decimal places a Decimal really uses (1.50 -> 1, 2E+1 -> 0)."""
    return max(0, -int(value.normalize().as_tuple().exponent))


def _scaled(value: Decimal, scale: int) -> int:
    """value x 10^scale as an exact int (the caller picked a scale that holds it)."""
    scaled = value.scaleb(scale)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} does not fit {scale} decimals")
    return int(scaled)


def _floor_div(numerator: pl.Expr, denominator: int) -> pl.Expr:
    """Floor division by a positive int constant."""
    return numerator // denominator


def _ceil_div(numerator: pl.Expr, denominator: int) -> pl.Expr:
    """Ceiling division by a positive int constant."""
    return (numerator + (denominator - 1)) // denominator


def markup_percent(sku: str, category: str | None, rules: MarkupConfig) -> Decimal:
    """The markup percent that applies to one SKU: per-SKU override, else category, else global."""
    if sku in rules.skus:
        return rules.skus[sku]
    if category is not None and category in rules.categories:
        return rules.categories[category]
    return rules.percent


def margin_floor(cost: pl.Expr, min_margin: Decimal) -> pl.Expr:
    """The lowest price allowed for a cost: cost x (1 + min_margin), exact (the margin floor)."""
    return cost.cast(MONEY) * pl.lit(1 + min_margin)


def below_floor(min_margin: Decimal) -> pl.Expr:
    """True for a priced row with a cost whose price is below its margin floor."""
    price, cost = pl.col("price"), pl.col("cost")
    return price.is_not_null() & cost.is_not_null() & (price < margin_floor(cost, min_margin))


def apply_markup(best: pl.DataFrame, rules: MarkupConfig) -> pl.DataFrame:
    """`best` plus `price` (MONEY, store currency): marked up, rounded, never below the floor."""
    percents = [rules.percent, *rules.categories.values(), *rules.skus.values()]
    pct_decimals = max(_decimals(p) for p in percents)
    if pct_decimals > MAX_RULE_DECIMALS:
        raise ValueError(f"markup percents may have at most {MAX_RULE_DECIMALS} decimals")
    factor_decimals = pct_decimals + 2  # 15 % -> factor 1.15
    margin_decimals = _decimals(rules.min_margin)
    if margin_decimals > MAX_RULE_DECIMALS:
        raise ValueError(f"min_margin may have at most {MAX_RULE_DECIMALS} decimals")
    step = rules.rounding.step
    if rules.rounding.mode == "step" and _decimals(step) > MONEY_DECIMALS:
        raise ValueError(f"rounding step {step} has more than {MONEY_DECIMALS} decimals")

    # Everything below is integer arithmetic on amounts scaled by 10^scale: exact, and vectorised.
    extra = max(factor_decimals, margin_decimals, 2)
    scale = MONEY_DECIMALS + extra

    def factor_units(percent: Decimal) -> int:
        return _scaled(1 + percent / 100, extra)

    sku_factor = pl.col("sku").replace_strict(
        {sku: factor_units(p) for sku, p in rules.skus.items()}, default=None, return_dtype=pl.Int128
    )
    category_factor = pl.col("category").replace_strict(
        {cat: factor_units(p) for cat, p in rules.categories.items()}, default=None, return_dtype=pl.Int128
    )
    factor = pl.coalesce(sku_factor, category_factor, pl.lit(factor_units(rules.percent), dtype=pl.Int128))
    cost_units = pl.col("cost").cast(MONEY).to_physical().cast(pl.Int128)  # ten-thousandths
    marked = cost_units * factor  # scale = 4 + extra
    floor = cost_units * _scaled(1 + rules.min_margin, extra)

    money_unit = 10**extra  # one ten-thousandth at this scale
    one = 10**scale
    if rules.rounding.mode == "none":
        # Half-up to the money scale; the floor moves up to the next ten-thousandth.
        rounded = _floor_div(2 * marked + money_unit, 2 * money_unit) * money_unit
        floored = _ceil_div(floor, money_unit) * money_unit
    elif rules.rounding.mode == "ending_99":
        # The smallest X.99 at or above the amount.
        cents_99 = 99 * 10 ** (scale - 2)

        def to_99(amount: pl.Expr) -> pl.Expr:
            return _ceil_div(amount - cents_99, one) * one + cents_99

        rounded = to_99(marked)
        floored = to_99(floor)
    else:
        # The nearest multiple of the step, halves up; the floor moves up to the next multiple.
        step_units = _scaled(step, scale)
        rounded = _floor_div(2 * marked + step_units, 2 * step_units) * step_units
        floored = _ceil_div(floor, step_units) * step_units

    price_units = pl.when(rounded >= floor).then(rounded).otherwise(floored)
    price = (
        (price_units // money_unit).cast(pl.Decimal(38, 0))
        * pl.lit(Decimal(1).scaleb(-MONEY_DECIMALS), dtype=pl.Decimal(38, MONEY_DECIMALS))
    ).cast(MONEY)
    available = pl.col("available").fill_null(False) & pl.col("cost").is_not_null()
    return best.with_columns(price=pl.when(available).then(price).otherwise(pl.lit(None, dtype=MONEY)))
