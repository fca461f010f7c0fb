"""Markup rules, rounding modes and the margin floor: tables plus a Decimal reference property."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing_assets.logic.markup import apply_markup, below_floor, markup_percent
from resources.config import MarkupConfig, RoundingConfig
from resources.schemas import MONEY

D = Decimal


def rules(mode: str = "none", step: str = "0.05", **kwargs: Any) -> MarkupConfig:
    return MarkupConfig(rounding=RoundingConfig(mode=mode, step=D(step)), **kwargs)


def price_of(
    cost: str | None, config: MarkupConfig, sku: str = "s", category: str | None = "c"
) -> Decimal | None:
    frame = pl.DataFrame(
        {
            "sku": [sku],
            "category": [category],
            "available": [True],
            "cost": [None if cost is None else D(cost)],
        },
        schema={"sku": pl.String, "category": pl.String, "available": pl.Boolean, "cost": MONEY},
    )
    out = apply_markup(frame, config)
    assert out.schema["price"] == MONEY
    return out.get_column("price").item()


GLOBAL_15 = {"percent": D("15"), "min_margin": D("0.05")}


@pytest.mark.parametrize(
    ("cost", "mode", "step", "expected"),
    [
        # none: the marked-up amount, half-up to MONEY's 4 decimals.
        ("10", "none", "0.05", "11.5"),
        ("3.3333", "none", "0.05", "3.8333"),  # 3.833295
        ("0.0030", "none", "0.05", "0.0035"),  # 0.00345: half-up (half-even would say 0.0034)
        # ending_99: the smallest X.99 at or above the amount.
        ("10", "ending_99", "0.05", "11.99"),  # 11.50
        ("10.4252", "ending_99", "0.05", "11.99"),  # 11.98898
        ("0.1", "ending_99", "0.05", "0.99"),
        # step: the nearest multiple of the step, halves up.
        ("10", "step", "0.25", "11.5"),
        ("10.1", "step", "0.25", "11.5"),  # 11.615 is nearer 11.50 than 11.75
        ("10", "step", "1", "12"),  # 11.5 is a half: up
        ("10.0434", "step", "0.05", "11.55"),  # 11.54991
        ("1", "step", "0.0001", "1.15"),
    ],
)
def test_rounding_table(cost: str, mode: str, step: str, expected: str) -> None:
    assert price_of(cost, rules(mode, step, **GLOBAL_15)) == D(expected)


def test_ending_99_just_above_a_99_moves_to_the_next() -> None:
    # 10.4261 x 1.15 = 11.990015 > 11.99 -> 12.99 (smallest X.99 at or above).
    assert price_of("10.4261", rules("ending_99", **GLOBAL_15)) == D("12.99")
    # exactly X.99 stays.
    assert price_of("1.99", rules("ending_99", percent=D(0), min_margin=D(0))) == D("1.99")


def test_step_half_way_and_just_past_it() -> None:
    assert price_of("10.1087", rules("step", "0.25", **GLOBAL_15)) == D("11.75")  # 11.625005
    assert price_of("10.1086", rules("step", "0.25", **GLOBAL_15)) == D("11.5")  # 11.62489


@pytest.mark.parametrize(
    ("mode", "step", "expected"),
    [
        ("none", "0.05", "10.5"),  # 9.00 marked, floor 10.50
        ("ending_99", "0.05", "10.99"),  # 9.99 is below the floor: next X.99 at/above 10.50
        ("step", "0.25", "10.5"),
        ("step", "1", "11"),  # round(9) = 9 < 10.5 -> next multiple of 1 at/above the floor
    ],
)
def test_floor_lifts_to_the_next_valid_rounded_value(mode: str, step: str, expected: str) -> None:
    config = rules(mode, step, percent=D("-10"), min_margin=D("0.05"))
    assert price_of("10", config) == D(expected)


def test_floor_when_rounding_down_crosses_it() -> None:
    # 15 % on 10 = 11.50 rounds (step 1, half-up) to 12; with a 16 % margin the floor is 11.60 -> 12 ok.
    assert price_of("10", rules("step", "1", percent=D(15), min_margin=D("0.16"))) == D("12")
    # 12 % on 10 = 11.20 rounds (step 1) down to 11, below the 11.10 floor -> lifted to 12.
    assert price_of("10", rules("step", "1", percent=D(12), min_margin=D("0.11"))) == D("12")
    # none: the floor itself, rounded up to 4 decimals (never below cost x (1 + margin)).
    assert price_of("0.0001", rules("none", percent=D(0), min_margin=D("0.05"))) == D("0.0002")


def test_precedence_sku_then_category_then_global() -> None:
    config = rules(percent=D("15"), categories={"games": D("20")}, skus={"vip": D("50")}, min_margin=D(0))
    assert price_of("10", config, sku="vip", category="games") == D("15")
    assert price_of("10", config, sku="other", category="games") == D("12")
    assert price_of("10", config, sku="other", category="music") == D("11.5")
    assert price_of("10", config, sku="other", category=None) == D("11.5")
    assert markup_percent("vip", "games", config) == D("50")
    assert markup_percent("x", "games", config) == D("20")
    assert markup_percent("x", None, config) == D("15")


def test_fractional_percent_is_exact() -> None:
    assert price_of("100", rules(percent=D("12.345"), min_margin=D(0))) == D("112.345")
    assert price_of("0.0007", rules(percent=D("12.5"), min_margin=D(0))) == D("0.0008")  # 0.0007875


def test_unavailable_rows_keep_price_null_and_columns_are_kept() -> None:
    frame = pl.DataFrame(
        {
            "sku": ["a", "b", "c"],
            "category": ["x", "x", "x"],
            "available": [True, False, True],
            "cost": [D("10"), D("10"), None],
            "batch": ["batch-001"] * 3,
        },
        schema_overrides={"cost": MONEY},
    )
    out = apply_markup(frame, rules(**GLOBAL_15))
    assert out.columns == [*frame.columns, "price"]
    assert out.get_column("price").to_list() == [D("11.5"), None, None]
    assert out.get_column("batch").to_list() == ["batch-001"] * 3


def test_rejects_step_finer_than_money() -> None:
    with pytest.raises(ValueError, match="step"):
        price_of("10", rules("step", "0.00001"))


# ------------------------------------------------------------------ property: matches a Decimal reference


def reference(cost: Decimal, percent: Decimal, mode: str, step: Decimal, margin: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        marked = cost * (1 + percent / 100)
        floor = cost * (1 + margin)
        if mode == "none":
            price = marked.quantize(D("0.0001"), rounding=ROUND_HALF_UP)
            return price if price >= floor else floor.quantize(D("0.0001"), rounding=ROUND_CEILING)
        if mode == "ending_99":

            def to_99(amount: Decimal) -> Decimal:
                return (amount - D("0.99")).to_integral_value(rounding=ROUND_CEILING) + D("0.99")

            price = to_99(marked)
            return price if price >= floor else to_99(floor)
        price = (marked / step).to_integral_value(rounding=ROUND_HALF_UP) * step
        return price if price >= floor else (floor / step).to_integral_value(rounding=ROUND_CEILING) * step


@settings(max_examples=300, deadline=None)
@given(
    cost=st.decimals(min_value=D("0.0001"), max_value=D("100000"), places=4),
    percent=st.decimals(min_value=D("-50"), max_value=D("300"), places=3),
    mode=st.sampled_from(["none", "ending_99", "step"]),
    step=st.sampled_from([D("0.01"), D("0.05"), D("0.25"), D("1"), D("5"), D("0.0003")]),
    margin=st.decimals(min_value=D("0"), max_value=D("0.5"), places=3),
)
def test_matches_decimal_reference(
    cost: Decimal, percent: Decimal, mode: str, step: Decimal, margin: Decimal
) -> None:
    config = rules(mode, str(step), percent=percent, min_margin=margin)
    got = price_of(str(cost), config)
    assert got == reference(cost, percent, mode, step, margin)
    # The markup's integer floor and the checks' `below_floor` are the same rule: never below.
    row = pl.DataFrame({"cost": [cost], "price": [got]}, schema={"cost": MONEY, "price": MONEY})
    assert not row.select(below_floor(margin)).item()
    assert got >= cost * (1 + margin)
