"""Best-offer selection (docs/architecture.md §4): property tests against a plain reference, rule tables."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pricing_assets.logic.best_offers as best_offers_module
from pricing_assets.debug import explain_candidates
from pricing_assets.logic.best_offers import convert_to_store_currency, select_best_offers, tie_break_order
from resources.schemas import (
    BEST_OFFERS_SCHEMA,
    CATALOG_ROW,
    CATALOG_SCHEMA,
    OFFER_TABLE_SCHEMA,
    OFFERS_SCHEMA,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=30)
FX = {"EUR": Decimal(1), "USD": Decimal("0.9215"), "GBP": Decimal("1.17423")}
CENT4 = Decimal("0.0001")


# ------------------------------------------------------------------ reference implementation


def reference(
    catalog: list[dict[str, Any]],
    offers: list[dict[str, Any]],
    order: list[str],
    enabled: Collection[str],
    fx: Mapping[str, Decimal],
    now: datetime,
    ttl: timedelta,
) -> list[dict[str, Any]]:
    """The best-offer rule of docs/architecture.md §4 written as plainly as possible, one SKU at a time."""
    ranked = [s for s in dict.fromkeys(order) if s in enabled] + sorted(set(enabled) - set(order))
    rank = {supplier: i for i, supplier in enumerate(ranked)}
    out = []
    for item in catalog:
        if item["active"] is not True:
            continue
        best_of_supplier: dict[str, tuple[tuple[Decimal, int], dict[str, Any], Decimal]] = {}
        for offer in offers:
            if offer["sku"] != item["sku"] or offer["supplier"] not in rank:
                continue
            if offer["currency"] not in fx or offer["price"] is None or offer["price"] <= 0:
                continue
            if offer["fetched_at"] is None or offer["fetched_at"] < now - ttl:
                continue
            stock = offer["stock"]
            if not ((stock is not None and stock > 0) or (stock is None and offer["in_stock"] is True)):
                continue
            cost = (offer["price"] * fx[offer["currency"]]).quantize(CENT4, rounding=ROUND_HALF_EVEN)
            sort_key = (cost, rank[offer["supplier"]])
            held = best_of_supplier.get(offer["supplier"])
            if held is None or sort_key < held[0]:  # strict: the first listed of equal offers stays
                best_of_supplier[offer["supplier"]] = (sort_key, offer, cost)
        ordered = sorted(best_of_supplier.values(), key=lambda entry: entry[0])
        row: dict[str, Any] = {"sku": item["sku"], "category": item["category"], "offer_count": len(ordered)}
        if ordered:
            _, offer, cost = ordered[0]
            row |= {
                "available": True,
                "supplier": offer["supplier"],
                "cost": cost,
                "supplier_price": offer["price"],
                "supplier_currency": offer["currency"],
                "stock": offer["stock"],
            }
        else:
            row |= dict.fromkeys(["supplier", "cost", "supplier_price", "supplier_currency", "stock"])
            row["available"] = False
        if len(ordered) > 1:
            _, runner, runner_cost = ordered[1]
            row |= {
                "runner_up_supplier": runner["supplier"],
                "runner_up_cost": runner_cost,
                "spread": runner_cost - row["cost"],
            }
        else:
            row |= dict.fromkeys(["runner_up_supplier", "runner_up_cost", "spread"])
        out.append(row)
    return out


# ------------------------------------------------------------------ helpers


def catalog_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    full = [{"title": "t", "product_id": "p", "variant_id": "v", **row} for row in rows]
    return pl.DataFrame(full, schema=CATALOG_SCHEMA)


def offers_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=OFFERS_SCHEMA)


def offer(sku: str, supplier: str, price: str, **extra: Any) -> dict[str, Any]:
    base = {
        "sku": sku,
        "supplier": supplier,
        "price": Decimal(price),
        "currency": "EUR",
        "stock": 5,
        "in_stock": True,
        "fetched_at": NOW,
    }
    return base | extra


def selected(
    catalog: list[dict[str, Any]], offers: list[dict[str, Any]] | pl.DataFrame, **kwargs: Any
) -> pl.DataFrame:
    """select_best_offers over these rows, at NOW with TTL; suppliers s1..s3 and FX unless given."""
    params = {"supplier_order": ["s1", "s2", "s3"], "enabled": {"s1", "s2", "s3"}, "fx": FX, "now": NOW}
    params |= {"staleness_ttl": TTL} | kwargs
    frame = offers if isinstance(offers, pl.DataFrame) else offers_frame(offers)
    return select_best_offers(catalog_frame(catalog), frame, **params)


def run(
    catalog: list[dict[str, Any]], offers: list[dict[str, Any]] | pl.DataFrame, **kwargs: Any
) -> list[dict[str, Any]]:
    result = selected(catalog, offers, **kwargs)
    assert result.schema == pl.Schema(BEST_OFFERS_SCHEMA)
    return result.to_dicts()


def one(offers: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    rows = run([{"sku": "a", "category": "c", "active": True}], offers, **kwargs)
    assert len(rows) == 1
    return rows[0]


# ------------------------------------------------------------------ property test

SUPPLIERS = ["s1", "s2", "s3", "zeta"]
SKUS = ["a", "b", "c", "d"]
prices = st.one_of(
    st.decimals(min_value=Decimal("-1"), max_value=Decimal("30"), places=4, allow_nan=False),
    st.sampled_from([Decimal("10"), Decimal("10.0000"), Decimal("9.9999")]),  # frequent ties
    st.none(),
)
offer_rows = st.fixed_dictionaries(
    {
        "sku": st.sampled_from([*SKUS, "not-in-catalog"]),
        "supplier": st.sampled_from([*SUPPLIERS, "unknown"]),
        "price": prices,
        "currency": st.sampled_from(["EUR", "USD", "GBP", "JPY", None]),
        "stock": st.one_of(st.none(), st.integers(min_value=-1, max_value=3)),
        "in_stock": st.one_of(st.none(), st.booleans()),
        "fetched_at": st.one_of(
            st.none(),
            st.sampled_from([NOW, NOW - TTL, NOW - TTL - timedelta(microseconds=1), NOW - 2 * TTL]),
        ),
    }
)
catalog_rows = st.lists(
    st.fixed_dictionaries(
        {
            "sku": st.sampled_from(SKUS),
            "category": st.sampled_from(["x", "y", None]),
            "active": st.one_of(st.booleans(), st.none()),
        }
    ),
    max_size=4,
    unique_by=lambda row: row["sku"],
)
fx_tables = st.fixed_dictionaries(
    {"EUR": st.just(Decimal(1))},
    optional={
        "USD": st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("3"), places=8),
        "GBP": st.sampled_from([Decimal("1.17423"), Decimal("0.5"), Decimal("2")]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalog=catalog_rows,
    offers=st.lists(offer_rows, max_size=25),
    order=st.permutations(SUPPLIERS),
    enabled=st.sets(st.sampled_from(SUPPLIERS)),
    fx=fx_tables,
)
def test_matches_reference(
    catalog: list[dict[str, Any]],
    offers: list[dict[str, Any]],
    order: list[str],
    enabled: set[str],
    fx: dict[str, Decimal],
) -> None:
    # "zeta" is left out of the registry order sometimes: it must then rank after, by id.
    registry_order = [s for s in order if s != "zeta"] if len(enabled) % 2 else list(order)
    expected = reference(catalog, offers, registry_order, enabled, fx, NOW, TTL)
    got = selected(catalog, offers, supplier_order=registry_order, enabled=enabled, fx=fx)
    assert got.schema == pl.Schema(BEST_OFFERS_SCHEMA)
    assert got.to_dicts() == [{name: row[name] for name in BEST_OFFERS_SCHEMA} for row in expected]


@settings(max_examples=60, deadline=None)
@given(offers=st.lists(offer_rows, max_size=12), big=st.decimals(min_value=10**9, max_value=10**15, places=4))
def test_huge_prices_take_the_wide_path_and_still_match(offers: list[dict[str, Any]], big: Decimal) -> None:
    # A price near the top of MONEY's range does not fit the 64-bit key: the 128-bit path must agree.
    offers = [*offers, offer("a", "s2", str(big))]
    catalog = [{"sku": sku, "category": "x", "active": True} for sku in SKUS]
    expected = reference(catalog, offers, ["s1", "s2", "s3"], {"s1", "s2", "s3"}, FX, NOW, TTL)
    got = run(catalog, offers)
    assert got == [{name: row[name] for name in BEST_OFFERS_SCHEMA} for row in expected]


# ------------------------------------------------------------------ rule tables


def test_cheapest_wins_and_runner_up_spread_count() -> None:
    row = one([offer("a", "s1", "10"), offer("a", "s2", "8.5"), offer("a", "s3", "12")])
    assert (row["supplier"], row["cost"], row["supplier_price"]) == ("s2", Decimal("8.5"), Decimal("8.5"))
    assert (row["runner_up_supplier"], row["runner_up_cost"]) == ("s1", Decimal("10"))
    assert row["spread"] == Decimal("1.5")
    assert row["offer_count"] == 3
    assert row["available"] is True
    assert row["stock"] == 5


def test_tie_goes_to_registry_order_then_supplier_id() -> None:
    offers = [offer("a", "s3", "10"), offer("a", "s1", "10"), offer("a", "s2", "10")]
    assert one(offers, supplier_order=["s2", "s3", "s1"])["supplier"] == "s2"
    assert one(offers, supplier_order=["s3", "s1", "s2"])["supplier"] == "s3"
    # Suppliers missing from the order rank after it, by id.
    row = one(offers, supplier_order=["s3"])
    assert (row["supplier"], row["runner_up_supplier"]) == ("s3", "s1")
    assert row["spread"] == Decimal(0)


def test_tie_break_order_helper() -> None:
    assert tie_break_order(["b", "a", "b", "c"], {"a", "b", "z", "y"}) == ["b", "a", "y", "z"]


def test_stale_offers_are_not_candidates_boundary_included() -> None:
    exactly_ttl = offer("a", "s1", "5", fetched_at=NOW - TTL)
    too_old = offer("a", "s2", "4", fetched_at=NOW - TTL - timedelta(microseconds=1))
    row = one([exactly_ttl, too_old])
    assert row["supplier"] == "s1"
    assert row["offer_count"] == 1
    assert one([too_old])["available"] is False


@pytest.mark.parametrize(
    ("stock", "in_stock", "candidate"),
    [
        (3, True, True),
        (3, False, True),  # a count above zero is stock, whatever the flag says
        (0, True, False),
        (-1, True, False),
        (None, True, True),  # unknown count, flagged in stock
        (None, False, False),
        (None, None, False),
    ],
)
def test_stock_rule(stock: int | None, in_stock: bool | None, candidate: bool) -> None:
    row = one([offer("a", "s1", "5", stock=stock, in_stock=in_stock)])
    assert row["available"] is candidate
    assert row["offer_count"] == int(candidate)


def test_disabled_supplier_is_ignored() -> None:
    row = one([offer("a", "s1", "5"), offer("a", "s2", "9")], enabled={"s2", "s3"})
    assert (row["supplier"], row["offer_count"], row["runner_up_supplier"]) == ("s2", 1, None)


def test_unknown_currency_is_never_guessed() -> None:
    row = one([offer("a", "s1", "1", currency="JPY"), offer("a", "s2", "9")])
    assert row["supplier"] == "s2"
    assert row["offer_count"] == 1
    assert one([offer("a", "s1", "1", currency=None)])["available"] is False


def test_fx_conversion_rounds_half_even_to_four_places() -> None:
    # 0.0001 USD x 0.5 = 0.00005 -> 0.0000 (half-even), 0.0003 x 0.5 = 0.00015 -> 0.0002.
    fx = {"EUR": Decimal(1), "USD": Decimal("0.5")}
    assert one([offer("a", "s1", "0.0003", currency="USD")], fx=fx)["cost"] == Decimal("0.0002")
    assert one([offer("a", "s1", "0.0005", currency="USD")], fx=fx)["cost"] == Decimal("0.0002")
    assert one([offer("a", "s1", "0.0007", currency="USD")], fx=fx)["cost"] == Decimal("0.0004")
    row = one([offer("a", "s1", "10", currency="USD")])
    assert (row["cost"], row["supplier_price"], row["supplier_currency"]) == (
        Decimal("9.215"),
        Decimal("10"),
        "USD",
    )


def test_fx_changes_the_winner() -> None:
    offers = [offer("a", "s1", "10", currency="USD"), offer("a", "s2", "9.5")]
    assert one(offers)["supplier"] == "s1"  # 9.215 EUR
    assert one(offers, fx={"EUR": Decimal(1), "USD": Decimal("0.96")})["supplier"] == "s2"  # 9.60 EUR


def test_runner_up_is_another_supplier_even_with_duplicate_listings() -> None:
    offers = [offer("a", "s1", "5"), offer("a", "s1", "6"), offer("a", "s2", "7")]
    row = one(offers)
    assert (row["supplier"], row["runner_up_supplier"], row["runner_up_cost"]) == ("s1", "s2", Decimal("7"))
    assert row["offer_count"] == 2
    solo = one([offer("a", "s1", "5", stock=1), offer("a", "s1", "5", stock=9)])
    assert (solo["runner_up_supplier"], solo["spread"], solo["offer_count"]) == (None, None, 1)
    assert solo["stock"] == 1  # equal duplicates: the first listed wins


def test_one_row_per_active_catalog_sku_in_catalog_order() -> None:
    catalog = [
        {"sku": "z", "category": "c1", "active": True},
        {"sku": "y", "category": "c2", "active": False},
        {"sku": "x", "category": None, "active": None},
        {"sku": "w", "category": "c3", "active": True},
    ]
    rows = run(catalog, [offer("w", "s1", "3"), offer("y", "s1", "3"), offer("stray", "s1", "1")])
    assert [(r["sku"], r["category"], r["available"]) for r in rows] == [
        ("z", "c1", False),
        ("w", "c3", True),
    ]
    unavailable = rows[0]
    assert unavailable["offer_count"] == 0
    assert all(unavailable[c] is None for c in ["supplier", "cost", "supplier_price", "stock", "spread"])


def test_no_offers_and_no_enabled_suppliers() -> None:
    assert one([])["available"] is False
    assert one([offer("a", "s1", "3")], enabled=set())["available"] is False


def test_nonpositive_and_missing_prices_are_not_candidates() -> None:
    row = one([offer("a", "s1", "0"), offer("a", "s2", "-1"), offer("a", "s3", "2")])
    assert (row["supplier"], row["offer_count"]) == ("s3", 1)
    assert one([offer("a", "s1", "0")])["available"] is False


def test_rejects_naive_now_and_bad_fx() -> None:
    with pytest.raises(ValueError, match="timezone"):
        one([offer("a", "s1", "3")], now=datetime(2026, 3, 1, 12))
    with pytest.raises(ValueError, match="positive"):
        one([offer("a", "s1", "3")], fx={"EUR": Decimal(0)})
    with pytest.raises(ValueError, match="decimals"):
        one([offer("a", "s1", "3")], fx={"EUR": Decimal("1." + "1" * 19)})


def test_convert_to_store_currency_expression() -> None:
    frame = pl.DataFrame(
        {"price": [Decimal("10"), Decimal("2.5"), Decimal("1")], "currency": ["USD", "GBP", "XXX"]},
        schema={"price": OFFERS_SCHEMA["price"], "currency": pl.String},
    )
    out = frame.select(convert_to_store_currency(pl.col("price"), pl.col("currency"), FX)).to_series()
    assert out.to_list() == [Decimal("9.215"), Decimal("2.9356"), None]  # 2.935575 -> 2.9356


def test_duplicate_catalog_rows_give_one_row_with_the_first_category() -> None:
    catalog = [
        {"sku": "a", "category": "first", "active": True},
        {"sku": "b", "category": "b", "active": True},
        {"sku": "a", "category": "second", "active": True},
    ]
    rows = run(catalog, [offer("a", "s1", "3")])
    assert [(r["sku"], r["category"], r["available"]) for r in rows] == [
        ("a", "first", True),
        ("b", "b", False),
    ]


# ------------------------------------------------------------------ hash grouping and its fallback

COLLIDING_HASHES = {
    # The foreign SKU lands in catalog SKU "a"'s group: its offer may win there, which must be caught.
    "foreign_into_a": lambda sku: sku.str.replace("not-in-catalog", "a", literal=True).hash(),
    # Every SKU in one group: catalog rows collide with each other.
    "all_one_group": lambda sku: sku.str.len_bytes().cast(pl.UInt64) * 0,
}


@pytest.fixture
def grouping_keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which key each per-SKU grouping used ("h" = hash, "sku" = the exact fallback)."""
    used: list[str] = []
    original = best_offers_module._per_sku

    def recording(union: pl.LazyFrame, by: str, *args: Any) -> pl.DataFrame:
        used.append(by)
        return original(union, by, *args)

    monkeypatch.setattr(best_offers_module, "_per_sku", recording)
    return used


@pytest.mark.parametrize("name", sorted(COLLIDING_HASHES))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(catalog=catalog_rows, offers=st.lists(offer_rows, max_size=25), fx=fx_tables)
def test_hash_collisions_never_change_the_answer(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    catalog: list[dict[str, Any]],
    offers: list[dict[str, Any]],
    fx: Any,
) -> None:
    monkeypatch.setattr(best_offers_module, "_sku_hash", COLLIDING_HASHES[name])
    expected = reference(catalog, offers, SUPPLIERS, set(SUPPLIERS), fx, NOW, TTL)
    got = run(catalog, offers, supplier_order=SUPPLIERS, enabled=set(SUPPLIERS), fx=fx)
    assert got == [{column: row[column] for column in BEST_OFFERS_SCHEMA} for row in expected]


def test_a_winning_foreign_offer_in_a_collided_group_forces_the_exact_path(
    monkeypatch: pytest.MonkeyPatch, grouping_keys: list[str]
) -> None:
    monkeypatch.setattr(best_offers_module, "_sku_hash", COLLIDING_HASHES["foreign_into_a"])
    row = one([offer("a", "s1", "10"), offer("not-in-catalog", "s2", "1")])
    assert (row["supplier"], row["cost"], row["offer_count"]) == ("s1", Decimal("10"), 1)
    assert grouping_keys == ["h", "sku"]


def test_a_losing_foreign_offer_in_a_collided_group_keeps_the_hash_path(
    monkeypatch: pytest.MonkeyPatch, grouping_keys: list[str]
) -> None:
    # Same group, but the foreign offer loses within its own rank: the hash result is already exact.
    monkeypatch.setattr(best_offers_module, "_sku_hash", COLLIDING_HASHES["foreign_into_a"])
    row = one([offer("a", "s1", "1"), offer("not-in-catalog", "s1", "10")])
    assert (row["supplier"], row["cost"], row["offer_count"]) == ("s1", Decimal("1"), 1)
    assert grouping_keys == ["h"]


def test_colliding_catalog_skus_force_the_exact_path(
    grouping_keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(best_offers_module, "_sku_hash", COLLIDING_HASHES["all_one_group"])
    catalog = [{"sku": s, "category": "c", "active": True} for s in ("a", "b")]
    rows = run(catalog, [offer("a", "s1", "3"), offer("b", "s2", "2")])
    assert [(r["sku"], r["supplier"], r["cost"]) for r in rows] == [
        ("a", "s1", Decimal(3)),
        ("b", "s2", Decimal(2)),
    ]
    assert grouping_keys == ["h", "sku"]


def test_real_hash_takes_the_fast_path(grouping_keys: list[str]) -> None:
    catalog = [{"sku": f"SKU-{i:05d}", "category": "c", "active": True} for i in range(2000)]
    offers = [offer(f"SKU-{i:05d}", f"s{1 + i % 3}", str(1 + i % 7)) for i in range(0, 4000, 2)]
    rows = run(catalog, offers)
    assert sum(r["available"] for r in rows) == 1000
    assert grouping_keys == ["h"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalog=catalog_rows,
    offers=st.lists(offer_rows, max_size=25),
    enabled=st.sets(st.sampled_from(SUPPLIERS)),
    fx=fx_tables,
)
def test_debug_explanation_agrees_with_the_selection(
    catalog: list[dict[str, Any]],
    offers: list[dict[str, Any]],
    enabled: set[str],
    fx: dict[str, Decimal],
) -> None:
    # debug_sku says "candidate" for exactly the offers select_best_offers chooses among: per active SKU,
    # the best cost is the cheapest explained candidate, and the offer count their distinct suppliers.
    explained = explain_candidates(offers_frame(offers), enabled=enabled, fx=fx, now=NOW, staleness_ttl=TTL)
    candidates = explained.filter(pl.col("excluded").is_null())
    got = selected(catalog, offers, supplier_order=SUPPLIERS, enabled=enabled, fx=fx)
    for row in got.iter_rows(named=True):
        own = candidates.filter(pl.col("sku") == row["sku"])
        assert row["available"] == (own.height > 0)
        assert row["cost"] == own.get_column("cost").min()
        assert row["offer_count"] == own.get_column("supplier").n_unique()
    # Every exclusion names its reason; nothing is excluded without one.
    assert explained.filter(pl.col("excluded") == "").is_empty()


# ------------------------------------------------------------------ offers placed by their catalog row


def with_catalog_rows(catalog: list[dict[str, Any]], offers: list[dict[str, Any]]) -> pl.DataFrame:
    """The offers as ingest stores them: joined to the catalog, each with its SKU's catalog row."""
    rows = {item["sku"]: index for index, item in enumerate(catalog)}
    kept = [{**o, CATALOG_ROW: rows[o["sku"]]} for o in offers if o["sku"] in rows]
    return pl.DataFrame(kept, schema=OFFER_TABLE_SCHEMA)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalog=catalog_rows,
    offers=st.lists(offer_rows, max_size=25),
    enabled=st.sets(st.sampled_from(SUPPLIERS)),
    fx=fx_tables,
    shuffle=st.randoms(use_true_random=False),
)
def test_offers_placed_by_catalog_row_match_the_reference_without_hashing(
    catalog: list[dict[str, Any]],
    offers: list[dict[str, Any]],
    enabled: set[str],
    fx: dict[str, Decimal],
    shuffle: Any,
) -> None:
    # Unsorted rows and a supplier listing a SKU twice take the per-row minimum first; still no hashing.
    shuffle.shuffle(offers)
    frame = with_catalog_rows(catalog, offers)
    with pytest.MonkeyPatch.context() as patch:
        used: list[str] = []
        original = best_offers_module._per_sku
        patch.setattr(
            best_offers_module, "_per_sku", lambda union, by, *a: used.append(by) or original(union, by, *a)
        )
        got = run(catalog, frame, supplier_order=SUPPLIERS, enabled=enabled, fx=fx)
    in_catalog = [o for o in offers if o["sku"] in {item["sku"] for item in catalog}]
    expected = reference(catalog, in_catalog, SUPPLIERS, enabled, fx, NOW, TTL)
    assert got == [{name: row[name] for name in BEST_OFFERS_SCHEMA} for row in expected]
    assert used == []


def test_an_offer_whose_row_holds_another_sku_sends_the_selection_to_the_sku_hash(
    grouping_keys: list[str],
) -> None:
    # The catalog changed since the fetch: row 0 is now "b". Placing by row would credit "b" with a's
    # offer; the check sees the SKUs differ and the SKU decides.
    catalog = [{"sku": "b", "category": "c", "active": True}, {"sku": "a", "category": "c", "active": True}]
    stale_rows = pl.DataFrame(
        [{**offer("a", "s1", "3"), CATALOG_ROW: 0}, {**offer("b", "s2", "5"), CATALOG_ROW: 1}],
        schema=OFFER_TABLE_SCHEMA,
    )
    rows = run(catalog, stale_rows)
    assert [(r["sku"], r["supplier"], r["cost"]) for r in rows] == [
        ("b", "s2", Decimal(5)),
        ("a", "s1", Decimal(3)),
    ]
    assert grouping_keys == ["h"]


@pytest.mark.parametrize(
    "not_a_candidate",
    [{"stock": 0, "in_stock": False}, {"fetched_at": NOW - 2 * TTL}, {"supplier": "s3"}],
    ids=["sold out", "stale", "supplier not enabled"],
)
def test_a_misplaced_offer_that_cannot_win_keeps_the_row_route(
    grouping_keys: list[str], not_a_candidate: dict[str, Any]
) -> None:
    # Its row holds "b", but it is never placed: no SKU hashing, and the answer the SKU would give.
    catalog = [{"sku": "b", "category": "c", "active": True}, {"sku": "a", "category": "c", "active": True}]
    offers = [
        {**offer("a", "s1", "1"), **not_a_candidate, CATALOG_ROW: 0},
        {**offer("a", "s2", "3"), CATALOG_ROW: 1},
        {**offer("b", "s2", "5"), CATALOG_ROW: 0},
    ]
    rows = run(catalog, pl.DataFrame(offers, schema=OFFER_TABLE_SCHEMA), enabled=["s1", "s2"])
    assert grouping_keys == []
    expected = run(
        catalog, [{k: v for k, v in o.items() if k != CATALOG_ROW} for o in offers], enabled=["s1", "s2"]
    )
    assert rows == expected
    assert [(r["sku"], r["supplier"], r["offer_count"]) for r in rows] == [("b", "s2", 1), ("a", "s2", 1)]


@pytest.mark.parametrize(
    ("case", "row"),
    [("null row (a file from before the column)", None), ("row past the catalog's end", 7)],
)
def test_an_offer_without_a_usable_row_sends_the_selection_to_the_sku_hash(
    grouping_keys: list[str], case: str, row: int | None
) -> None:
    catalog = [{"sku": "a", "category": "c", "active": True}, {"sku": "b", "category": "c", "active": True}]
    frame = pl.DataFrame(
        [{**offer("a", "s1", "3"), CATALOG_ROW: 0}, {**offer("b", "s2", "5"), CATALOG_ROW: row}],
        schema=OFFER_TABLE_SCHEMA,
    )
    rows = run(catalog, frame)
    assert [(r["sku"], r["supplier"]) for r in rows] == [("a", "s1"), ("b", "s2")], case
    assert grouping_keys == ["h"], case


def test_a_sku_with_two_catalog_rows_sends_the_selection_to_the_sku_hash(grouping_keys: list[str]) -> None:
    # Each offer's row holds its SKU, yet "a" has two rows: by row it would come out twice.
    catalog = [
        {"sku": "a", "category": "first", "active": True},
        {"sku": "a", "category": "second", "active": True},
    ]
    frame = pl.DataFrame(
        [{**offer("a", "s1", "3"), CATALOG_ROW: 0}, {**offer("a", "s2", "2"), CATALOG_ROW: 1}],
        schema=OFFER_TABLE_SCHEMA,
    )
    rows = run(catalog, frame)
    assert [(r["sku"], r["category"], r["supplier"], r["offer_count"]) for r in rows] == [
        ("a", "first", "s2", 2)
    ]
    assert grouping_keys == ["h", "sku"]


def test_offers_with_good_rows_take_no_grouping_at_all(grouping_keys: list[str]) -> None:
    catalog = [{"sku": f"SKU-{i:05d}", "category": "c", "active": i % 5 != 0} for i in range(2000)]
    offers = [offer(f"SKU-{i:05d}", f"s{1 + i % 3}", str(1 + i % 7)) for i in range(0, 4000, 2)]
    frame = with_catalog_rows(catalog, offers)
    rows = run(catalog, frame)
    assert rows == run(catalog, offers)  # the same answer as the SKU-hash route
    assert len(rows) == 1600 and sum(r["available"] for r in rows) == 800
    assert grouping_keys == ["h"]  # only the run() above grouped


@pytest.mark.parametrize("cheap_first", [True, False])
def test_a_supplier_listing_a_sku_twice_by_row_keeps_its_cheaper_listing(cheap_first: bool) -> None:
    catalog = [{"sku": "a", "category": "c", "active": True}, {"sku": "b", "category": "c", "active": True}]
    listings = [offer("a", "s1", "4"), offer("a", "s1", "9")]
    offers = [offer("b", "s1", "1"), *(listings if cheap_first else listings[::-1]), offer("a", "s2", "6")]
    rows = run(catalog, with_catalog_rows(catalog, offers))
    assert [(r["sku"], r["supplier"], r["cost"], r["runner_up_cost"], r["offer_count"]) for r in rows] == [
        ("a", "s1", Decimal(4), Decimal(6), 2),
        ("b", "s1", Decimal(1), None, 1),
    ]
