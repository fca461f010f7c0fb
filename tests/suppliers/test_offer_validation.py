"""validate_offers: every rejected row gets a reason, good rows conform to the offers contract."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.offer_validation import RAW_OFFERS_SCHEMA, REASONS, validate_offers
from resources.schemas import OFFERS_SCHEMA, QUARANTINE_SCHEMA

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
KNOWN = {"EUR", "USD", "GBP"}


def raw(*rows: dict) -> pl.DataFrame:
    defaults = {"sku": "S1", "price": "10.00", "currency": "EUR", "stock": 5, "in_stock": True, "raw": "{}"}
    return pl.DataFrame([{**defaults, **row} for row in rows], schema=RAW_OFFERS_SCHEMA)


def run(frame: pl.DataFrame, **kwargs) -> tuple[pl.DataFrame, pl.DataFrame]:
    return validate_offers(frame, supplier="alpha", known_currencies=KNOWN, fetched_at=NOW, **kwargs)


def test_good_rows_conform_to_contract():
    offers, quarantine = run(
        raw({"sku": " S1 ", "price": "12.5", "currency": "eur"}, {"sku": "S2", "stock": None})
    )
    assert offers.schema == pl.Schema(OFFERS_SCHEMA)
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert offers.to_dicts() == [
        {"sku": "S1", "supplier": "alpha", "price": Decimal("12.5000"), "currency": "EUR", "stock": 5,
         "in_stock": True, "fetched_at": NOW},
        {"sku": "S2", "supplier": "alpha", "price": Decimal("10.0000"), "currency": "EUR", "stock": None,
         "in_stock": True, "fetched_at": NOW},
    ]  # fmt: skip
    assert quarantine.height == 0


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"sku": None}, "missing sku"),
        ({"sku": "   "}, "missing sku"),
        ({"price": None}, "missing price"),
        ({"price": ""}, "missing price"),
        ({"price": "abc"}, "price is not a decimal number"),
        ({"price": "NaN"}, "price is not a decimal number"),
        ({"price": "inf"}, "price is not a decimal number"),
        ({"price": "-inf"}, "price is not a decimal number"),
        ({"price": "0"}, "price <= 0"),
        ({"price": "-3.50"}, "price <= 0"),
        ({"price": "0.00001"}, "price <= 0"),  # rounds to 0.0000 at the contract's 4 decimals
        ({"price": "100000.01"}, "absurd price"),
        ({"currency": "XXX"}, "unknown currency"),
        ({"currency": None}, "missing currency"),
        ({"stock": -1}, "negative stock"),
        ({"stock": 10_000_001}, "absurd stock"),
    ],
)
def test_each_bad_value_is_quarantined_with_its_reason(row, reason):
    good = {"sku": "OK", "price": "1.00"}
    offers, quarantine = run(raw(good, {"raw": '{"bad": true}', **row}))
    assert offers["sku"].to_list() == ["OK"]
    assert quarantine["reason"].to_list() == [reason]
    assert quarantine["raw"].to_list() == ['{"bad": true}']
    assert quarantine["supplier"].to_list() == ["alpha"]
    assert quarantine["fetched_at"].to_list() == [NOW]


def test_several_reasons_are_all_listed_in_fixed_order():
    _, quarantine = run(raw({"price": "-1", "currency": "XXX", "stock": -2}))
    assert quarantine["reason"].to_list() == ["price <= 0; unknown currency; negative stock"]


def test_identical_duplicates_collapse_to_one_offer():
    offers, quarantine = run(raw({"price": "9.5", "raw": "a"}, {"price": "9.50", "raw": "b"}))
    assert offers.height == 1 and quarantine.height == 0


def test_conflicting_duplicates_quarantine_every_copy():
    offers, quarantine = run(raw({"price": "9.5"}, {"price": "9.6"}, {"sku": "S2"}))
    assert offers["sku"].to_list() == ["S2"]
    assert quarantine["sku"].to_list() == ["S1", "S1"]
    assert quarantine["reason"].to_list() == ["conflicting duplicate sku"] * 2


def test_known_stock_decides_availability():
    offers, _ = run(
        raw(
            {"sku": "zero", "stock": 0, "in_stock": True},
            {"sku": "unknown", "stock": None, "in_stock": None},
            {"sku": "flagged", "stock": None, "in_stock": True},
            {"sku": "some", "stock": 3, "in_stock": None},
        )
    )
    assert dict(zip(offers["sku"], offers["in_stock"], strict=True)) == {
        "zero": False,
        "unknown": False,
        "flagged": True,
        "some": True,
    }


def test_limits_are_configurable():
    _, quarantine = run(raw({"price": "50", "stock": 20}), max_price=Decimal("40"), max_stock=10)
    assert quarantine["reason"].to_list() == ["absurd price; absurd stock"]


def test_fetched_at_is_stored_in_utc():
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    offers, _ = validate_offers(raw({}), supplier="a", known_currencies=KNOWN, fetched_at=local)
    assert offers["fetched_at"].to_list() == [NOW]
    assert str(offers.schema["fetched_at"]) == "Datetime(time_unit='us', time_zone='UTC')"


def test_naive_fetched_at_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_offers(raw({}), supplier="a", known_currencies=KNOWN, fetched_at=datetime(2026, 1, 1))


def test_missing_input_column_is_named():
    with pytest.raises(ValueError, match="in_stock"):
        run(raw({}).drop("in_stock"))


def test_empty_input_gives_empty_contract_frames():
    offers, quarantine = run(pl.DataFrame(schema=RAW_OFFERS_SCHEMA))
    assert offers.height == quarantine.height == 0
    assert offers.schema == pl.Schema(OFFERS_SCHEMA)


price_text = st.one_of(
    st.none(),
    st.decimals(min_value=-10, max_value=200_000, places=2, allow_nan=False).map(str),
    st.sampled_from(["NaN", "inf", "abc", "", " 5 ", "1e3"]),
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "sku": st.one_of(st.none(), st.sampled_from(["A", "B", "C", "D", " "])),
            "price": price_text,
            "currency": st.sampled_from(["EUR", "usd", "XXX", None]),
            "stock": st.one_of(st.none(), st.integers(-5, 20_000_000)),
            "in_stock": st.one_of(st.none(), st.booleans()),
            "raw": st.just("{}"),
        }
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_every_row_is_either_an_offer_or_quarantined_with_a_known_reason(records):
    frame = pl.DataFrame(records, schema=RAW_OFFERS_SCHEMA)
    offers, quarantine = run(frame)
    # Nothing disappears except identical copies of one offer.
    assert offers.height + quarantine.height <= frame.height
    if frame.height:
        assert offers.height + quarantine.height >= 1
    for reasons in quarantine["reason"].to_list():
        assert reasons and all(part in REASONS for part in reasons.split("; "))
    assert offers["sku"].is_duplicated().sum() == 0
    if offers.height:
        assert offers["price"].min() > 0
        assert set(offers["currency"]) <= KNOWN
    # A row is rejected exactly when some rule says so: rejected SKUs never also appear as offers.
    assert set(offers["sku"]).isdisjoint(set(quarantine["sku"].drop_nulls()))


def test_rows_in_equal_rows_out_when_there_are_no_identical_copies():
    frame = pl.DataFrame(
        {
            "sku": [f"S{i}" for i in range(1000)],
            "price": [str(i - 10) for i in range(1000)],
            "currency": ["EUR"] * 1000,
            "stock": list(range(1000)),
            "in_stock": [None] * 1000,
            "raw": ["{}"] * 1000,
        },
        schema=RAW_OFFERS_SCHEMA,
    )
    offers, quarantine = run(frame)
    assert quarantine.height == 11  # prices -10 .. 0
    assert offers.height == 989


def test_large_frames_validate_quickly():
    n = 300_000
    frame = pl.DataFrame(
        {
            "sku": [f"S{i}" for i in range(n)],
            "price": [f"{(i % 5000) - 5}.25" for i in range(n)],
            "currency": ["EUR"] * n,
            "stock": [i % 40 - 1 for i in range(n)],
            "in_stock": [None] * n,
            "raw": ["{}"] * n,
        },
        schema=RAW_OFFERS_SCHEMA,
    )
    started = time.perf_counter()
    offers, quarantine = run(frame)
    elapsed = time.perf_counter() - started
    assert offers.height + quarantine.height == n
    assert quarantine.height == pl.Series([(i % 5000) - 5 < 0 or i % 40 == 0 for i in range(n)]).sum()
    assert elapsed < 10, f"validating {n} rows took {elapsed:.1f}s"


def test_a_frame_of_the_wrong_types_is_a_parser_bug_not_bad_data():
    from resources.offer_validation import _failed_rows, offers_schema

    schema = offers_schema(known_currencies=KNOWN, max_price=Decimal(10), max_stock=10)
    frame = pl.DataFrame({"_row": [0], "raw": ["{}"], "sku": [1], "price_text": ["1"]})
    with pytest.raises(ValueError, match="does not fit the validation schema"):
        _failed_rows(frame, schema)
