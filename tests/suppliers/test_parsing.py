"""Field paths, value parsers, record mapping and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest

from resources.suppliers import RecordMapper, compile_path, parse_retry_after, parse_stock_text
from resources.suppliers.parsing import (
    PathError,
    build_extractor,
    make_minor_units,
    parse_bool,
    parse_decimal_text,
    parse_int,
    parser_for,
)


def test_compile_path():
    assert compile_path("results[0].content.price") == ("results", 0, "content", "price")
    assert compile_path("a[1][2]") == ("a", 1, 2)
    assert compile_path("") == ()
    for bad in ("a..b", "a[x]", "a.[0", "a]"):
        with pytest.raises(PathError):
            compile_path(bad)


def test_extractor_returns_none_for_missing_steps_and_never_runs_registry_text():
    extract = build_extractor([("a", "b"), ("list", 1), ("x'] or __import__('os') #",), ()])
    record = {"a": {"b": 1}, "list": [10]}
    assert extract([record, "text"]) == ([1, None], [None, None], [None, None], [record, "text"])


@pytest.mark.parametrize(
    ("value", "text"),
    [(1234, "12.34"), ("1234", "12.34"), (-500, "-5.00"), (0, "0.00"), (Decimal(7), "0.07")],
)
def test_minor_units(value, text):
    assert make_minor_units(2)(value) == text


def test_minor_units_rejects_what_is_not_whole_units():
    parse = make_minor_units(2)
    assert parse("NaN") == "NaN"
    assert parse(None) is None
    assert parse(True) == "True"
    assert parse(Decimal("12.5")) == "fractional minor units 12.5"
    assert make_minor_units(0)(1500) == "1500"
    assert parser_for("minor_units:3", field="price", supplier="s")(1500) == "1.500"


def test_decimal_text_keeps_json_decimals_exact():
    assert parse_decimal_text(Decimal("19.99")) == "19.99"
    assert parse_decimal_text(5) == "5"
    assert parse_decimal_text(" 7.10 ") == " 7.10 "
    assert parse_decimal_text(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("In Stock", (None, True)),
        ("In stock.", (None, True)),
        ("Only 3 left in stock - order soon.", (3, True)),
        ("only 1 left", (1, True)),
        ("12 available", (12, True)),
        ("Currently unavailable.", (0, False)),
        ("Out of Stock", (0, False)),
        ("Temporarily out of stock.", (0, False)),
        ("Usually ships within 2 to 3 days.", (None, True)),
        ("Something else", (None, None)),
        (None, (None, None)),
        (4, (4, True)),
    ],
)
def test_stock_text(text, expected):
    assert parse_stock_text(text) == expected


def test_int_and_bool_parsers():
    assert parse_int("42") == 42 and parse_int(" -3 ") == -3 and parse_int(Decimal("7")) == 7
    assert parse_int("4.5") is None and parse_int(True) is None and parse_int("many") is None
    assert parse_int(10**40) == 2**62  # clamped so validation can call it absurd
    assert parse_bool("yes") is True and parse_bool("out of stock") is False and parse_bool(0) is False
    assert parse_bool("maybe") is None


def test_unknown_parser_and_field_are_named():
    with pytest.raises(ValueError, match="unknown parser 'cents'"):
        parser_for("cents", field="price", supplier="s")
    with pytest.raises(ValueError, match="stock field only"):
        parser_for("stock_text", field="price", supplier="s")
    with pytest.raises(ValueError, match="unknown offer fields in mapping: colour"):
        RecordMapper(supplier="s", fields={"colour": "c"}, parsers={}, default_currency=None)


def test_record_mapper_builds_raw_offers():
    mapper = RecordMapper(
        supplier="s",
        fields={"sku": "id", "price": "p.cents", "stock": "avail"},
        parsers={"price": "minor_units", "stock": "stock_text"},
        default_currency="USD",
    )
    frame = mapper.to_frame(
        [
            {"id": "A", "p": {"cents": 1999}, "avail": "Only 2 left"},
            {"id": "B", "avail": "Currently unavailable"},
        ]
    )
    assert frame.to_dicts() == [
        {"sku": "A", "price": "19.99", "currency": "USD", "stock": 2, "in_stock": True, "raw": "0"},
        {"sku": "B", "price": None, "currency": "USD", "stock": 0, "in_stock": False, "raw": "1"},
    ]


def test_record_mapper_uses_requested_skus_for_per_sku_answers():
    mapper = RecordMapper(supplier="s", fields={"price": "price"}, parsers={}, default_currency="GBP")
    frame = mapper.to_frame([{"price": Decimal("3.10")}], skus=["SKU-1"])
    assert frame.row(0, named=True)["sku"] == "SKU-1"
    assert frame.row(0, named=True)["price"] == "3.10"


def test_retry_after_seconds_and_http_date():
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=42), usegmt=True), now=now) == 42.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=42), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-4") == 0.0
