"""Guard (per-SKU change and batch share), approval release, and the blocking push checks."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from pricing_assets.checks import split_pushable
from pricing_assets.logic.guard import (
    apply_guard,
    check_no_nonpositive_price,
    check_not_below_floor,
    release_held,
)
from pricing_assets.logic.markup import margin_floor
from resources.config import GuardConfig
from resources.schemas import MONEY

D = Decimal
LAST_SCHEMA = {"sku": pl.String, "price": MONEY, "available": pl.Boolean, "supplier": pl.String}


def prices(rows: list[tuple[str, str | None]], batch: str | list[str] = "batch-000") -> pl.DataFrame:
    batches = batch if isinstance(batch, list) else [batch] * len(rows)
    return pl.DataFrame(
        {
            "sku": [sku for sku, _ in rows],
            "price": [None if p is None else D(p) for _, p in rows],
            "available": [p is not None for _, p in rows],
            "batch": batches,
        },
        schema={"sku": pl.String, "price": MONEY, "available": pl.Boolean, "batch": pl.String},
    )


def last(rows: list[tuple[str, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(sku, None if p is None else D(p), True, "s1") for sku, p in rows], schema=LAST_SCHEMA, orient="row"
    )


def by_sku(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["sku"]: row for row in frame.to_dicts()}


LOOSE_SHARE = GuardConfig(max_change_pct=D(30), max_batch_change_share=D(1))


@pytest.mark.parametrize(
    ("old", "new", "held", "reason"),
    [
        ("10", "14.2", True, "change 42.0% > 30%"),
        ("10", "13", False, None),  # exactly 30 % is allowed
        ("10", "13.0001", True, "change 30.0% > 30%"),
        ("10", "6.9999", True, "change 30.0% > 30%"),
        ("10", "7", False, None),
        ("10", "10", False, None),
        ("0", "1", True, "change from a non-positive price"),
    ],
)
def test_per_sku_change_threshold(old: str, new: str, held: bool, reason: str | None) -> None:
    out = by_sku(apply_guard(prices([("a", new)]), last([("a", old)]), LOOSE_SHARE))["a"]
    assert out["held"] is held
    assert out["hold_reason"] == reason
    assert out["last_pushed_price"] == D(old)


def test_change_pct_is_informational_float() -> None:
    out = apply_guard(prices([("a", "12.5")]), last([("a", "10")]), LOOSE_SHARE)
    assert out.schema["change_pct"] == pl.Float64
    assert out.get_column("change_pct").item() == pytest.approx(25.0)


def test_first_ever_price_and_unavailable_are_not_held() -> None:
    # One flip in a batch of two is half the batch: allowed here, so only the per-SKU rules apply.
    rules = GuardConfig(max_batch_unavailable_share=D("0.5"))
    out = by_sku(apply_guard(prices([("new", "999"), ("gone", None)]), last([("gone", "5")]), rules))
    assert out["new"]["held"] is False and out["new"]["last_pushed_price"] is None
    assert out["new"]["change_pct"] is None
    assert out["gone"]["held"] is False and out["gone"]["last_pushed_price"] == D("5")


def test_batch_share_holds_every_change_in_that_batch_only() -> None:
    # batch-000: 3 of 4 SKUs change by 5 % (share 0.75 > 0.50); batch-001: 1 of 4 changes.
    rows = [
        ("a", "10.5"),
        ("b", "10.5"),
        ("c", "10.5"),
        ("d", "10"),
        ("e", "10.5"),
        ("f", "10"),
        ("g", "10"),
        ("h", "10"),
    ]
    frame = prices(rows, batch=["batch-000"] * 4 + ["batch-001"] * 4)
    out = by_sku(apply_guard(frame, last([(sku, "10") for sku, _ in rows]), GuardConfig()))
    assert [out[s]["held"] for s in "abcd"] == [True, True, True, False]
    assert out["a"]["hold_reason"] == "batch change share 0.75 > 0.50"
    assert out["d"]["hold_reason"] is None
    assert [out[s]["held"] for s in "efgh"] == [False] * 4


def test_batch_share_at_the_limit_is_allowed_and_both_reasons_combine() -> None:
    rows = [("a", "10.5"), ("b", "10")]
    out = by_sku(apply_guard(prices(rows), last([("a", "10"), ("b", "10")]), GuardConfig()))
    assert out["a"]["held"] is False  # 1 of 2 = 0.50, not more
    rows = [("a", "20"), ("b", "10.5")]
    out = by_sku(apply_guard(prices(rows), last([("a", "10"), ("b", "10")]), GuardConfig()))
    assert out["a"]["hold_reason"] == "change 100.0% > 30%; batch change share 1.00 > 0.50"
    assert out["b"]["hold_reason"] == "batch change share 1.00 > 0.50"


def test_without_batch_column_the_frame_is_one_batch() -> None:
    frame = prices([("a", "11"), ("b", "11"), ("c", "10")]).drop("batch")
    out = apply_guard(frame, last([("a", "10"), ("b", "10"), ("c", "10")]), GuardConfig())
    assert out.get_column("held").to_list() == [True, True, False]


def test_keeps_columns_and_replaces_previous_guard_columns() -> None:
    frame = prices([("a", "10")])
    once = apply_guard(frame, last([("a", "20")]), LOOSE_SHARE)
    twice = apply_guard(once, last([("a", "10")]), LOOSE_SHARE)
    assert once.columns == [*frame.columns, "last_pushed_price", "change_pct", "held", "hold_reason"]
    assert twice.columns == once.columns
    assert twice.get_column("held").to_list() == [False]
    assert twice.height == 1


def test_release_some_or_all() -> None:
    guarded = apply_guard(
        prices([("a", "20"), ("b", "30"), ("c", "10")]),
        last([("a", "10"), ("b", "10"), ("c", "10")]),
        LOOSE_SHARE,
    )
    held = guarded.filter(pl.col("held"))
    released, remaining = release_held(held, ["b"])
    assert released.get_column("sku").to_list() == ["b"]
    assert released.get_column("held").to_list() == [False]
    assert released.get_column("hold_reason").to_list() == [None]
    assert released.get_column("price").to_list() == [D("30")]
    assert remaining.get_column("sku").to_list() == ["a"]
    everything, nothing = release_held(held, None)
    assert sorted(everything.get_column("sku").to_list()) == ["a", "b"]
    assert nothing.height == 0


def test_release_unknown_sku_is_a_clear_error() -> None:
    held = apply_guard(prices([("a", "20")]), last([("a", "10")]), LOOSE_SHARE).filter(pl.col("held"))
    with pytest.raises(ValueError, match="nope"):
        release_held(held, ["a", "nope"])


def test_check_no_nonpositive_price() -> None:
    ok, meta = check_no_nonpositive_price(prices([("a", "1"), ("b", None)]))
    assert ok is True and meta["nonpositive_prices"] == 0 and meta["checked"] == 1
    ok, meta = check_no_nonpositive_price(prices([("a", "0"), ("b", "-1"), ("c", "2")]))
    assert ok is False
    assert meta["nonpositive_prices"] == 2
    assert meta["examples"] == ["a", "b"]


def test_check_not_below_floor_is_exact() -> None:
    frame = pl.DataFrame(
        {
            "sku": ["a", "b", "c", "d"],
            "price": [D("10.5"), D("10.4999"), None, D("1")],
            "cost": [D(10), D(10), D(10), None],
        },
        schema={"sku": pl.String, "price": MONEY, "cost": MONEY},
    )
    ok, meta = check_not_below_floor(frame, D("0.05"))
    assert ok is False
    assert meta["below_floor"] == 1 and meta["examples"] == ["b"] and meta["checked"] == 2
    ok, _ = check_not_below_floor(frame.filter(pl.col("sku") != "b"), D("0.05"))
    assert ok is True


def test_a_batch_turning_unavailable_at_once_is_held_with_the_reason() -> None:
    """staleness_ttl too small, or one bad supplier: most of a batch flips to unavailable at once."""
    rows = [("a", None), ("b", None), ("c", None), ("d", "10")]  # 3 of 4 would turn unavailable
    out = by_sku(apply_guard(prices(rows), last([(sku, "10") for sku in "abcd"]), GuardConfig()))
    assert [out[s]["held"] for s in "abcd"] == [True, True, True, False]
    assert out["a"]["hold_reason"] == "batch unavailable share 0.75 > 0.25: would turn unavailable"
    assert out["a"]["last_pushed_price"] == D("10") and out["a"]["price"] is None
    assert out["d"]["hold_reason"] is None


def test_unavailable_share_is_per_batch_and_at_the_limit_allowed() -> None:
    # batch-000: 1 of 4 flips (0.25, not more than 0.25); batch-001: 2 of 4 flip (0.50).
    rows = [("a", None), ("b", "10"), ("c", "10"), ("d", "10"), ("e", None), ("f", None), ("g", "10")]
    rows += [("h", "10")]
    frame = prices(rows, batch=["batch-000"] * 4 + ["batch-001"] * 4)
    out = by_sku(apply_guard(frame, last([(sku, "10") for sku in "abcdefgh"]), GuardConfig()))
    assert out["a"]["held"] is False
    assert [out[s]["held"] for s in "efgh"] == [True, True, False, False]


def test_only_flips_from_available_count() -> None:
    """A SKU already unavailable at the storefront, or never pushed, is not a flip."""
    last_rows = pl.DataFrame(
        [("a", D("10"), False, None), ("b", D("10"), True, "s1")], schema=LAST_SCHEMA, orient="row"
    )
    out = by_sku(apply_guard(prices([("a", None), ("b", "10"), ("new", None)]), last_rows, GuardConfig()))
    assert [out[s]["held"] for s in ("a", "b", "new")] == [False, False, False]


def test_unavailable_share_zero_holds_any_flip_and_one_holds_none() -> None:
    frame = prices([("a", None), ("b", "10"), ("c", "10"), ("d", "10"), ("e", "10")])
    pushed = last([(sku, "10") for sku in "abcde"])
    strict = apply_guard(frame, pushed, GuardConfig(max_batch_unavailable_share=D(0)))
    loose = apply_guard(frame, pushed, GuardConfig(max_batch_unavailable_share=D(1)))
    assert strict.get_column("held").to_list() == [True, False, False, False, False]
    assert loose.get_column("held").sum() == 0


def test_the_blocking_checks_and_the_push_filter_apply_the_same_floor() -> None:
    # One statement of the margin floor: the check, the row filter of a push and the markup agree on
    # which rows are below it, including the exact boundary cost x (1 + min_margin).
    margin = Decimal("0.05")
    frame = pl.DataFrame(
        {
            "sku": ["at", "under", "over", "free", "no-cost"],
            "cost": [Decimal("10"), Decimal("10"), Decimal("10"), Decimal("10"), None],
            "price": [Decimal("10.5"), Decimal("10.4999"), Decimal("11"), Decimal("0"), Decimal("1")],
        },
        schema={"sku": pl.String(), "cost": MONEY, "price": MONEY},
    )
    passed, details = check_not_below_floor(frame, margin)
    assert not passed and details["below_floor"] == 2  # "under" and "free"
    pushable, rejected = split_pushable(frame, margin)
    assert sorted(rejected.get_column("sku")) == ["free", "under"]
    assert sorted(pushable.get_column("sku")) == ["at", "no-cost", "over"]
    assert frame.select(margin_floor(pl.col("cost"), margin)).to_series().to_list()[0] == Decimal("10.5")
