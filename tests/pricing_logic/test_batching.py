"""Stable SKU -> catalog_batch assignment: golden values, vectorised agreement, insert stability, SQL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing_assets.logic.batching import (
    active_batch_skus,
    assign_batches,
    batch_index,
    batch_key,
    batch_keys,
    batch_row_offsets,
    in_batches,
    rows_per_batch,
)
from resources.schemas import CATALOG_ROW

# Computed once with `printf '%s' SKU | md5sum` (first 16 hex digits as an unsigned int, mod n): these
# must never change, or every SKU would silently move to another partition.
GOLDEN = [
    ("SKU-000001", 16, 1),
    ("SKU-000002", 16, 4),
    ("A", 16, 8),
    ("sku-é-ü", 16, 9),
    ("", 16, 4),
    ("0", 16, 15),
    ("SKU-ABC-123", 16, 7),
    ("SKU-000001", 7, 3),
    ("A", 7, 0),
    ("SKU-000001", 1000, 17),
    ("A", 1000, 720),
    ("sku-é-ü", 1000, 657),
]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pricing.md"
# The expressions docs/pricing.md gives analysts (with N as a parameter); a test checks they are in the docs.
POSTGRES_EXPR = """'batch-' || lpad((mod(('x' || substr(md5(sku), 1, 16))::bit(64)::bigint::numeric
                             + 18446744073709551616, 18446744073709551616) % :n)::text, 3, '0') AS batch"""
DUCKDB_EXPR = (
    "'batch-' || lpad(CAST((('0x' || substr(md5(sku), 1, 16))::UBIGINT % ?) AS VARCHAR), 3, '0') AS batch"
)
DOCUMENTED_POSTGRES = f"SELECT {POSTGRES_EXPR} FROM (SELECT CAST(:sku AS text) AS sku) AS t"
DOCUMENTED_DUCKDB = f"SELECT {DUCKDB_EXPR} FROM (SELECT CAST(? AS VARCHAR) AS sku)"

skus = st.text(min_size=0, max_size=40)


@pytest.mark.parametrize(("sku", "n", "expected"), GOLDEN)
def test_golden_values(sku: str, n: int, expected: int) -> None:
    assert batch_index(sku, n) == expected


def test_golden_values_follow_the_documented_formula() -> None:
    for sku, n, expected in GOLDEN:
        digest = hashlib.md5(sku.encode("utf-8")).digest()
        assert int.from_bytes(digest[:8], "big") % n == expected


def test_stable_across_processes() -> None:
    # A fresh interpreter has a different str-hash seed: the batch must not depend on it.
    code = "from pricing_assets.logic.batching import batch_index; print(batch_index('SKU-000002', 16))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "4"


def test_batch_key_and_keys() -> None:
    assert batch_key(0) == "batch-000"
    assert batch_key(7) == "batch-007"
    assert batch_key(123) == "batch-123"
    assert batch_keys(3) == ["batch-000", "batch-001", "batch-002"]
    assert len(batch_keys(16)) == 16
    assert batch_keys(16)[-1] == "batch-015"


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_nonpositive_batch_count(bad: int) -> None:
    with pytest.raises(ValueError, match="batches"):
        batch_index("SKU", bad)
    with pytest.raises(ValueError, match="batches"):
        batch_keys(bad)
    with pytest.raises(ValueError, match="batches"):
        assign_batches(pl.DataFrame({"sku": ["a"]}), bad)


def test_rejects_negative_index() -> None:
    with pytest.raises(ValueError, match="index"):
        batch_key(-1)


@settings(max_examples=60, deadline=None)
@given(st.lists(skus, max_size=50), st.integers(min_value=1, max_value=1000))
def test_assign_batches_matches_batch_index(values: list[str], n: int) -> None:
    frame = pl.DataFrame(
        {"sku": values, "other": list(range(len(values)))}, schema={"sku": pl.String, "other": pl.Int64}
    )
    out = assign_batches(frame, n)
    assert out.columns == ["sku", "other", "batch"]
    assert out.schema["batch"] == pl.String
    assert out.get_column("batch").to_list() == [batch_key(batch_index(v, n)) for v in values]
    assert out.get_column("other").to_list() == list(range(len(values)))


def test_assign_batches_custom_column_and_empty() -> None:
    out = assign_batches(pl.DataFrame({"code": ["A"]}), 16, sku_col="code")
    assert out.get_column("batch").to_list() == ["batch-008"]
    empty = assign_batches(pl.DataFrame(schema={"sku": pl.String}), 16)
    assert empty.height == 0
    assert empty.schema["batch"] == pl.String


def test_assign_batches_rejects_null_sku() -> None:
    with pytest.raises(ValueError, match="null"):
        assign_batches(pl.DataFrame({"sku": ["a", None]}), 16)


@settings(max_examples=40, deadline=None)
@given(st.lists(skus, unique=True, max_size=40), st.lists(skus, max_size=40))
def test_adding_skus_never_moves_others(existing: list[str], added: list[str]) -> None:
    before = assign_batches(pl.DataFrame({"sku": existing}, schema={"sku": pl.String}), 16)
    grown = pl.DataFrame({"sku": [*added[:20], *existing, *added[20:]]}, schema={"sku": pl.String})
    after = dict(assign_batches(grown, 16).select("sku", "batch").iter_rows())
    for sku, batch in before.iter_rows():
        assert after[sku] == batch


def test_batches_are_reasonably_balanced() -> None:
    frame = assign_batches(pl.DataFrame({"sku": [f"SKU-{i:06d}" for i in range(16_000)]}), 16)
    counts = frame.group_by("batch").len().get_column("len")
    assert frame.get_column("batch").n_unique() == 16
    assert counts.min() > 800 and counts.max() < 1200


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_tested_snippets_are_the_documented_ones() -> None:
    docs = _squash(DOCS.read_text())
    assert _squash(DUCKDB_EXPR.replace("% ?", "% 16")) in docs
    assert _squash(POSTGRES_EXPR.replace("% :n", "% 16")) in docs


def test_documented_duckdb_snippet_agrees() -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    for sku, n, expected in GOLDEN:
        assert con.execute(DOCUMENTED_DUCKDB, [n, sku]).fetchone()[0] == batch_key(expected)


@pytest.mark.postgres
def test_documented_postgres_snippet_agrees(pg_url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            for sku, n, expected in GOLDEN:
                got = conn.execute(sqlalchemy.text(DOCUMENTED_POSTGRES), {"sku": sku, "n": n}).scalar_one()
                assert got == batch_key(expected)
    finally:
        engine.dispose()


def test_the_batch_filter_keeps_exactly_the_batches_asked_for() -> None:
    frame = pl.DataFrame({"batch": ["batch-000", "batch-001", "batch-002", "batch-003"]})
    # A range with a gap: the range lets a scan skip row groups, the exact set decides the rows.
    assert frame.filter(in_batches(["batch-001", "batch-003"])).get_column("batch").to_list() == [
        "batch-001",
        "batch-003",
    ]
    assert frame.filter(in_batches([])).is_empty()


def test_batch_skus_carry_their_row_within_the_batch_counting_inactive_rows() -> None:
    catalog = pl.DataFrame(
        {
            "sku": ["a", "b", "c", "d", "e", "f"],
            "batch": ["batch-000", "batch-000", "batch-000", "batch-001", "batch-001", "batch-002"],
            "active": [True, False, True, False, True, True],
        }
    )
    rows = active_batch_skus(catalog.lazy(), ["batch-000", "batch-001"])
    assert rows.to_dicts() == [
        {"sku": "a", "batch": "batch-000", CATALOG_ROW: 0},
        {"sku": "c", "batch": "batch-000", CATALOG_ROW: 2},
        {"sku": "e", "batch": "batch-001", CATALOG_ROW: 1},
    ]
    # The row counts from the batch's own start, whichever other batches the run has.
    alone = active_batch_skus(catalog.lazy(), ["batch-001"])
    assert alone.to_dicts() == [{"sku": "e", "batch": "batch-001", CATALOG_ROW: 1}]


def test_batch_row_offsets_give_each_batch_start_or_none_when_a_batch_is_split() -> None:
    run = pl.DataFrame({"batch": ["batch-003", "batch-003", "batch-001", "batch-001", "batch-001"]})
    starts = dict(batch_row_offsets(run).iter_rows())
    assert starts == {"batch-003": 0, "batch-001": 2}
    split = pl.DataFrame({"batch": ["batch-001", "batch-003", "batch-001"]})
    assert batch_row_offsets(split) is None


def test_rows_per_batch_counts_each_batch_of_the_run_and_zero_for_one_without_rows() -> None:
    frame = pl.DataFrame({"batch": ["b2", "b1", "b2", "b9"], "sku": ["x", "y", "z", "w"]})
    assert rows_per_batch(frame, ["b1", "b2", "b3"]) == {"b1": 1, "b2": 2, "b3": 0}
    assert rows_per_batch(frame.clear(), ["b1"]) == {"b1": 0}
