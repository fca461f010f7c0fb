"""Price history change log: idempotent updates, open/close rules, and the documented as-of query."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing_assets.logic.history import combine_partitions, day_slice, offers_as_of, update_price_history
from resources.schemas import OFFERS_SCHEMA, PRICE_HISTORY_SCHEMA

D = Decimal
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
FX = {"EUR": D(1), "USD": D("0.9")}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "pricing.md"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def offers(*rows: tuple[Any, ...]) -> pl.DataFrame:
    """Rows of (sku, supplier, price, currency, stock, in_stock)."""
    full = [(sku, sup, D(price), cur, stock, flag, T0) for sku, sup, price, cur, stock, flag in rows]
    return pl.DataFrame(full, schema=OFFERS_SCHEMA, orient="row")


def history_rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return list(frame.select("sku", "supplier", "price", "stock", "valid_from", "valid_to").iter_rows())


FIRST = offers(
    ("a", "s1", "10", "EUR", 5, True), ("a", "s2", "3", "USD", None, True), ("b", "s1", "7", "EUR", 0, False)
)


def test_first_observation_opens_one_row_per_offer() -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    assert history.schema == pl.Schema(PRICE_HISTORY_SCHEMA)
    assert history_rows(history) == [
        ("a", "s1", D("10"), 5, at(0), None),
        ("a", "s2", D("3"), None, at(0), None),
        ("b", "s1", D("7"), 0, at(0), None),
    ]
    assert history.get_column("cost").to_list() == [D("10"), D("2.7"), D("7")]
    unknown = update_price_history(None, offers(("a", "s1", "1", "JPY", 1, True)), seen_at=at(0), fx=FX)
    assert unknown.get_column("cost").to_list() == [None]


def test_reapplying_the_same_offers_is_a_no_op() -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    assert update_price_history(history, FIRST, seen_at=at(0), fx=FX).equals(history)
    assert update_price_history(history, FIRST, seen_at=at(5), fx=FX).equals(history)
    # A later FX rate does not make an unchanged offer a change.
    assert update_price_history(history, FIRST, seen_at=at(6), fx={**FX, "USD": D("2")}).equals(history)


@pytest.mark.parametrize(
    "changed",
    [
        ("a", "s1", "11", "EUR", 5, True),  # price
        ("a", "s1", "10", "EUR", 4, True),  # stock
        ("a", "s1", "10", "EUR", 5, False),  # in_stock flag
        ("a", "s1", "10", "USD", 5, True),  # currency
        ("a", "s1", "10", "EUR", None, True),  # stock becomes unknown
    ],
)
def test_a_change_closes_the_open_row_and_opens_a_new_one(changed: tuple[Any, ...]) -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    second = offers(changed, ("a", "s2", "3", "USD", None, True), ("b", "s1", "7", "EUR", 0, False))
    after = update_price_history(history, second, seen_at=at(1), fx=FX)
    a_s1 = after.filter((pl.col("sku") == "a") & (pl.col("supplier") == "s1"))
    assert a_s1.select("valid_from", "valid_to").rows() == [(at(0), at(1)), (at(1), None)]
    assert a_s1.get_column("stock").to_list()[1] == changed[4]
    assert after.height == 4  # the other two offers are untouched
    assert update_price_history(after, second, seen_at=at(2), fx=FX).equals(after)


def test_vanished_offer_of_a_listed_supplier_closes_absent_supplier_stays_open() -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    # s1 now lists only "a"; s2 is missing entirely (outage): its rows stay open.
    after = update_price_history(history, offers(("a", "s1", "10", "EUR", 5, True)), seen_at=at(1), fx=FX)
    assert history_rows(after) == [
        ("a", "s1", D("10"), 5, at(0), None),
        ("a", "s2", D("3"), None, at(0), None),
        ("b", "s1", D("7"), 0, at(0), at(1)),
    ]
    back = update_price_history(after, FIRST, seen_at=at(2), fx=FX)
    assert history_rows(back)[-1] == ("b", "s1", D("7"), 0, at(2), None)
    assert back.height == 4


def test_rerun_at_the_same_instant_replaces_instead_of_adding_zero_length_rows() -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    wrong = offers(("a", "s1", "99", "EUR", 5, True), ("a", "s2", "3", "USD", None, True))
    right = offers(("a", "s1", "11", "EUR", 5, True), ("a", "s2", "3", "USD", None, True))
    via_wrong = update_price_history(
        update_price_history(history, wrong, seen_at=at(1), fx=FX), right, seen_at=at(1), fx=FX
    )
    direct = update_price_history(history, right, seen_at=at(1), fx=FX)
    assert via_wrong.equals(direct)
    assert via_wrong.filter(pl.col("valid_from") == pl.col("valid_to")).height == 0


def test_observation_older_than_the_open_row_is_ignored() -> None:
    history = update_price_history(None, FIRST, seen_at=at(5), fx=FX)
    older = offers(("a", "s1", "1", "EUR", 1, True))
    assert update_price_history(history, older, seen_at=at(1), fx=FX).equals(history)


def test_duplicate_listing_keeps_the_first_and_naive_time_is_rejected() -> None:
    dup = offers(("a", "s1", "10", "EUR", 5, True), ("a", "s1", "12", "EUR", 5, True))
    assert update_price_history(None, dup, seen_at=at(0), fx=FX).get_column("price").to_list() == [D("10")]
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    dup_known = offers(("a", "s1", "10", "EUR", 5, True), ("a", "s1", "12", "EUR", 5, True))
    kept = update_price_history(history, dup_known, seen_at=at(1), fx=FX)
    assert kept.height == history.height  # a/s1 unchanged (first listing), b/s1 closed
    assert (
        kept.filter(pl.col("valid_to").is_null() & (pl.col("supplier") == "s1")).rows()
        == history.head(1).rows()
    )
    changed_first = offers(("a", "s1", "12", "EUR", 5, True), ("a", "s1", "10", "EUR", 5, True))
    after = update_price_history(history, changed_first, seen_at=at(1), fx=FX)
    assert after.filter(pl.col("valid_to").is_null() & (pl.col("supplier") == "s1")).get_column(
        "price"
    ).to_list() == [D("12")]
    with pytest.raises(ValueError, match="timezone"):
        update_price_history(None, dup, seen_at=datetime(2026, 3, 1), fx=FX)


def test_broken_history_with_two_open_rows_is_refused() -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    with pytest.raises(ValueError, match="open row"):
        update_price_history(pl.concat([history, history]), FIRST, seen_at=at(1), fx=FX)


def test_as_of_boundaries() -> None:
    history = update_price_history(None, FIRST, seen_at=at(0), fx=FX)
    history = update_price_history(
        history,
        offers(("a", "s1", "11", "EUR", 5, True), ("a", "s2", "3", "USD", None, True)),
        seen_at=at(2),
        fx=FX,
    )
    assert offers_as_of(history, at(-1)).height == 0
    before = offers_as_of(history, at(2) - timedelta(microseconds=1))
    assert before.select("sku", "supplier", "price").rows() == [
        ("a", "s1", D("10")),
        ("a", "s2", D("3")),
        ("b", "s1", D("7")),
    ]
    exactly = offers_as_of(history, at(2))  # valid_from inclusive, valid_to exclusive
    assert exactly.select("sku", "supplier", "price").rows() == [("a", "s1", D("11")), ("a", "s2", D("3"))]


# ------------------------------------------------------------------ property: history replays the snapshots

SUPPLIERS = ["s1", "s2"]
snapshot = st.dictionaries(
    keys=st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(SUPPLIERS)),
    values=st.tuples(st.sampled_from(["1", "2", "2.5"]), st.sampled_from([None, 0, 3])),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(snapshot, min_size=1, max_size=6))
def test_as_of_each_observation_returns_what_was_seen(
    snapshots: list[dict[tuple[str, str], tuple[str, Any]]],
) -> None:
    history: pl.DataFrame | None = None
    state: dict[tuple[str, str], tuple[str, Any]] = {}
    expected_at: list[dict[tuple[str, str], tuple[Decimal, Any]]] = []
    for i, snap in enumerate(snapshots):
        frame = offers(
            *[
                (sku, sup, price, "EUR", stock, stock != 0)
                for (sku, sup), (price, stock) in sorted(snap.items())
            ]
        )
        history = update_price_history(history, frame, seen_at=at(i), fx=FX)
        again = update_price_history(history, frame, seen_at=at(i), fx=FX)
        assert again.equals(history)  # idempotent re-run
        present = {sup for _, sup in snap}
        state = {k: v for k, v in state.items() if k[1] not in present} | snap
        expected_at.append({k: (D(p), s) for k, (p, s) in state.items()})
    assert history is not None
    for i, expected in enumerate(expected_at):
        seen = offers_as_of(history, at(i))
        got = {(r["sku"], r["supplier"]): (r["price"], r["stock"]) for r in seen.to_dicts()}
        assert got == expected
    # Minimal and well-formed: rows of a key never overlap, and two rows that touch always differ.
    for _, group in history.group_by(["sku", "supplier"]):
        rows = group.sort("valid_from").select("price", "stock", "valid_from", "valid_to").rows()
        for earlier, later in itertools.pairwise(rows):
            assert earlier[3] is not None and earlier[3] <= later[2]
            if earlier[3] == later[2]:
                assert earlier[:2] != later[:2]


# ------------------------------------------------------------------ documented analyst queries


def _doc_block(marker: str) -> str:
    text = DOCS.read_text()
    start = text.index(marker)
    body_start = text.index("\n", text.index("```", start)) + 1
    return text[body_start : text.index("```", body_start)]


def _daily_warehouse(tmp_path: Path) -> Path:
    """Three days of observations written the way the daily partitions hold them."""
    folder = tmp_path / "warehouse" / "price_history"
    folder.mkdir(parents=True)
    history = None
    steps = [
        (at(1), FIRST),
        (at(2), offers(("a", "s1", "11", "EUR", 5, True), ("a", "s2", "3", "USD", None, True))),
        (at(30), offers(("a", "s1", "12", "EUR", 5, True), ("a", "s2", "3", "USD", None, True))),
        (at(55), offers(("a", "s1", "12", "EUR", 4, True), ("a", "s2", "3", "USD", 2, True))),
    ]
    for seen_at, snapshot in steps:
        history = update_price_history(history, snapshot, seen_at=seen_at, fx=FX)
        day = seen_at.date()
        day_slice(history, day).with_columns(day=pl.lit(str(day))).write_parquet(folder / f"{day}.parquet")
    return tmp_path / "warehouse"


def test_daily_partitions_combine_back_to_the_full_log(tmp_path: Path) -> None:
    warehouse = _daily_warehouse(tmp_path)
    files = sorted((warehouse / "price_history").glob("*.parquet"))
    assert [f.stem for f in files] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    combined = combine_partitions(pl.concat([pl.read_parquet(f) for f in files], how="diagonal"))
    expected = update_price_history(None, FIRST, seen_at=at(1), fx=FX)
    assert combined.height == 7  # a/s1: 10, 11, 12, 12 (stock 4); a/s2: 3, 3 (stock 2); b/s1 closed
    assert combined.filter(pl.col("valid_to").is_null()).height == 2
    assert combined.schema == expected.schema
    # day 2 holds the row that was open at its start (opened on day 1) and the one opened on day 2.
    day2 = pl.read_parquet(files[1])
    assert sorted(day2.get_column("price").cast(pl.String).to_list()) == ["11.0000", "12.0000", "3.0000"]


def test_documented_polars_as_of_query_runs(tmp_path: Path) -> None:
    warehouse = _daily_warehouse(tmp_path)
    namespace: dict[str, Any] = {}
    exec(_doc_block("<!-- as-of:polars -->"), namespace)
    for instant in [at(0), at(1.5), at(2), at(31), at(60)]:
        got: pl.DataFrame = namespace["history_as_of"](str(warehouse), instant)
        files = sorted((warehouse / "price_history").glob("*.parquet"))
        log = pl.concat([pl.read_parquet(f) for f in files], how="diagonal")
        expected = offers_as_of(log, instant)
        assert got.select(expected.columns).equals(expected)
    assert namespace["history_as_of"](str(warehouse), at(1.5)).get_column("price").to_list() == [
        D(10),
        D(3),
        D(7),
    ]


def test_documented_duckdb_as_of_query_runs(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    warehouse = _daily_warehouse(tmp_path)
    sql = _doc_block("<!-- as-of:duckdb -->").replace("warehouse/", f"{warehouse}/")
    rows = duckdb.connect().execute(sql).fetchall()  # as of 2026-03-01 01:00 = at(1)
    assert sorted((r[0], r[1]) for r in rows) == [("a", "s1"), ("a", "s2"), ("b", "s1")]
