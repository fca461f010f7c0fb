"""Pure orders logic: validation reasons, allocation (golden day, scarce SKU, property), report, summary."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from dagster import AssetCheckSeverity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders_assets import allocation, checks, sales, schemas, validation
from resources.orders_db import RAW_LINES_SCHEMA, RAW_ORDERS_SCHEMA
from tests.orders.conftest import price_history_frame, snapshot, ts

D = "2026-03-10"


def lines_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Accepted `orders` rows from short dicts (order_id, created_at, sku, quantity, status, unit_price)."""
    full = [
        {
            "day": row["created_at"].date().isoformat(),
            "order_id": row["order_id"],
            "customer_id": str(row.get("customer_id", 1)),
            "status": row.get("status", "paid"),
            "currency": "EUR",
            "payment_method": "card",
            "created_at": row["created_at"],
            "updated_at": row["created_at"],
            "sku": row["sku"],
            "quantity": row.get("quantity", 1),
            "unit_price": Decimal(row.get("unit_price", "9.99")),
        }
        for row in rows
    ]
    return pl.DataFrame(full, schema=schemas.ORDERS_SCHEMA)


def golden_inputs() -> tuple[pl.DataFrame, pl.DataFrame]:
    snaps = price_history_frame(
        [
            snapshot("A", "s1", "5.00", 2, ts(f"{D} 00:00"), ts(f"{D} 12:00")),
            snapshot("A", "s1", "5.00", 1, ts(f"{D} 12:00")),
            snapshot("A", "s2", "6.00", None, ts("2026-03-09 00:00")),
            snapshot("B", "s1", "10.00", 1, ts("2026-03-09 10:00")),
            # Cheaper, but out of stock: never chosen.
            snapshot("B", "s2", "9.00", 0, ts("2026-03-09 00:00"), in_stock=False),
        ]
    )
    lines = lines_frame(
        [
            {"order_id": 7, "created_at": ts(f"{D} 15:00"), "sku": "C", "unit_price": "20.00"},
            {"order_id": 2, "created_at": ts(f"{D} 08:00"), "sku": "A", "quantity": 2},
            {"order_id": 1, "created_at": ts(f"{D} 08:00"), "sku": "B", "unit_price": "15.00"},
            {"order_id": 1, "created_at": ts(f"{D} 08:00"), "sku": "A"},
            {"order_id": 3, "created_at": ts(f"{D} 09:00"), "sku": "A", "status": "cancelled"},
            {"order_id": 4, "created_at": ts(f"{D} 10:00"), "sku": "A", "status": "refunded"},
            {"order_id": 5, "created_at": ts(f"{D} 13:00"), "sku": "A", "status": "placed"},
            {"order_id": 6, "created_at": ts(f"{D} 14:00"), "sku": "A"},
        ]
    )
    return lines, allocation.normalize_snapshots(snaps)


def test_golden_day_allocation_computed_by_hand() -> None:
    lines, snaps = golden_inputs()
    out = allocation.allocate(lines, snaps)
    got = out.select("fcfs_rank", "order_id", "sku", "allocation", "supplier", "unit_cost").rows()
    d = Decimal
    assert got == [
        (1, 1, "A", "allocated", "s1", d("5.0000")),  # s1 had 2 until noon
        (2, 1, "B", "allocated", "s1", d("10.0000")),  # s2 is cheaper but out of stock
        (3, 2, "A", "allocated", "s2", d("6.0000")),  # needs 2, s1 has 1 left: whole line to s2
        (4, 3, "A", "cancelled", None, None),  # cancelled orders take no stock
        (5, 4, "A", "allocated", "s1", d("5.0000")),  # refunded still took the last unit of s1
        (6, 5, "A", "allocated", "s1", d("5.0000")),  # the noon snapshot restocked 1
        (7, 6, "A", "allocated", "s2", d("6.0000")),  # ... which order 5 took
        (8, 7, "C", "backordered", None, None),  # no supplier lists C
    ]
    assert out.schema == pl.Schema(schemas.ORDER_ALLOCATIONS_SCHEMA)
    assert out.filter(pl.col("order_id") == 5).get_column("snapshot_valid_from").item() == ts(f"{D} 12:00")


def test_golden_day_sales_report_computed_by_hand() -> None:
    lines, snaps = golden_inputs()
    report = sales.sales_report(allocation.allocate(lines, snaps))
    d = Decimal
    # A/s1: orders 1 and 5 (order 4 was refunded): 2 x 9.99 = 19.98 revenue, 2 x 5.00 cost.
    # A/s2: order 2 (2 units) and 6 (1 unit): 3 x 9.99 = 29.97 revenue, 3 x 6.00 cost.
    # B/s1: order 1: 15.00 revenue, 10.00 cost. C was backordered, order 3 cancelled: neither counts.
    assert report.rows() == [
        (D, "A", "s1", 2, 2, d("19.9800"), d("10.0000"), d("9.9800")),
        (D, "A", "s2", 2, 3, d("29.9700"), d("18.0000"), d("11.9700")),
        (D, "B", "s1", 1, 1, d("15.0000"), d("10.0000"), d("5.0000")),
    ]
    assert report.schema == pl.Schema(schemas.SALES_REPORT_SCHEMA)


def test_scarce_sku_at_the_same_instant_is_served_by_order_id_and_never_oversold() -> None:
    instant = ts(f"{D} 12:00:00")
    ids = [17, 3, 29, 8, 1, 22, 14, 5, 30, 11, 2, 26, 9, 19, 6, 24, 13, 4, 28, 10]
    lines = lines_frame([{"order_id": i, "created_at": instant, "sku": "X"} for i in ids])
    snaps = allocation.normalize_snapshots(
        price_history_frame(
            [
                snapshot("X", "cheap", "5.00", 4, ts(f"{D} 00:00")),
                snapshot("X", "dear", "7.00", 3, ts(f"{D} 00:00")),
            ]
        )
    )
    out = allocation.allocate(lines, snaps).sort("fcfs_rank")
    assert out.get_column("order_id").to_list() == sorted(ids)
    assert out.get_column("supplier").to_list() == ["cheap"] * 4 + ["dear"] * 3 + [None] * 13
    assert out.get_column("allocation").to_list()[7:] == ["backordered"] * 13
    assert allocation.stock_balance(out, snaps).get_column("remaining").to_list() == [0, 0]


def test_a_line_is_filled_whole_or_backordered_and_a_later_smaller_line_may_fit() -> None:
    lines = lines_frame(
        [
            {"order_id": 1, "created_at": ts(f"{D} 10:00"), "sku": "X", "quantity": 2},
            {"order_id": 2, "created_at": ts(f"{D} 10:01"), "sku": "X", "quantity": 2},
            {"order_id": 3, "created_at": ts(f"{D} 10:02"), "sku": "X", "quantity": 1},
        ]
    )
    snaps = allocation.normalize_snapshots(
        price_history_frame([snapshot("X", "s1", "5.00", 3, ts(f"{D} 00:00"))])
    )
    out = allocation.allocate(lines, snaps)
    assert out.get_column("allocation").to_list() == ["allocated", "backordered", "allocated"]


def test_when_prices_move_the_cheapest_supplier_at_each_order_time_wins() -> None:
    snaps = allocation.normalize_snapshots(
        price_history_frame(
            [
                snapshot("A", "s1", "4.00", None, ts(f"{D} 00:00"), ts(f"{D} 12:00")),
                snapshot("A", "s1", "6.00", None, ts(f"{D} 12:00")),
                snapshot("A", "s2", "5.00", None, ts(f"{D} 00:00")),
            ]
        )
    )
    lines = lines_frame(
        [
            {"order_id": 1, "created_at": ts(f"{D} 09:00"), "sku": "A"},
            {"order_id": 2, "created_at": ts(f"{D} 13:00"), "sku": "A"},
        ]
    )
    out = allocation.allocate(lines, snaps)
    assert out.select("supplier", "unit_cost").rows() == [
        ("s1", Decimal("4.0000")),
        ("s2", Decimal("5.0000")),
    ]


def test_units_taken_on_earlier_days_count_against_a_snapshot_still_valid() -> None:
    lines, snaps = golden_inputs()
    prior = allocation.allocate(
        lines_frame([{"order_id": 0, "created_at": ts("2026-03-09 11:00"), "sku": "B"}]), snaps
    )
    assert prior.get_column("supplier").to_list() == ["s1"]
    out = allocation.allocate(lines, snaps, allocation.consumed_units(prior))
    # B/s1 (stock 1, valid since yesterday) was used up yesterday: today's B line is backordered.
    assert out.filter(pl.col("sku") == "B").get_column("allocation").to_list() == ["backordered"]
    balance = allocation.stock_balance(out, snaps, allocation.consumed_units(prior))
    assert not balance.get_column("violation").any()
    # Had yesterday overdrawn the snapshot, today's balance would show it although today took nothing.
    overdrawn = pl.concat([prior, prior.with_columns(pl.lit(9, pl.Int64).alias("order_id"))])
    balance = allocation.stock_balance(out, snaps, allocation.consumed_units(overdrawn))
    assert balance.filter(pl.col("violation")).select("sku", "prior", "allocated", "remaining").rows() == [
        ("B", 2, 0, -1)
    ]


def test_stock_balance_flags_oversold_snapshots_and_allocations_without_stock() -> None:
    lines, snaps = golden_inputs()
    out = allocation.allocate(lines, snaps)
    # Pretend the allocator had given order 6 to s1 too: the noon snapshot (stock 1) would give 2.
    broken = out.with_columns(
        pl.when(pl.col("order_id") == 6).then(pl.lit("s1")).otherwise(pl.col("supplier")).alias("supplier")
    )
    balance = allocation.stock_balance(broken, snaps)
    bad = balance.filter(pl.col("violation"))
    assert bad.select("sku", "supplier", "stock", "allocated", "remaining").rows() == [("A", "s1", 1, 2, -1)]
    result = checks.no_oversell(broken, snaps)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.ERROR
    # An allocation from a supplier whose snapshot is out of stock is a violation as well.
    from_empty = out.with_columns(
        pl.when(pl.col("sku") == "B").then(pl.lit("s2")).otherwise(pl.col("supplier")).alias("supplier")
    )
    assert not checks.no_oversell(from_empty, snaps).passed
    assert checks.no_oversell(out, snaps).passed


def test_allocations_match_orders_detects_stray_missing_and_duplicate_rows() -> None:
    lines, snaps = golden_inputs()
    out = allocation.allocate(lines, snaps)
    assert checks.allocations_match_orders(out, lines).passed
    assert not checks.allocations_match_orders(out.head(7), lines).passed
    assert not checks.allocations_match_orders(pl.concat([out, out.head(1)]), lines).passed
    stray = out.with_columns(
        pl.when(pl.col("order_id") == 7).then(99).otherwise(pl.col("order_id")).alias("order_id")
    )
    assert not checks.allocations_match_orders(stray, lines).passed


# ---------------------------------------------------------------- property: allocate == naive greedy


def reference_allocation(
    lines: list[dict[str, Any]], snaps: list[dict[str, Any]], prior: dict[tuple[Any, ...], int]
) -> dict[tuple[int, str], str | None]:
    """The rules of docs/architecture.md §4 written as the obvious loop, one line at a time."""
    remaining: dict[tuple[Any, ...], int | None] = {}
    result: dict[tuple[int, str], str | None] = {}
    for line in sorted(lines, key=lambda r: (r["created_at"], r["order_id"], r["sku"])):
        if line["status"] == "cancelled":
            result[(line["order_id"], line["sku"])] = None
            continue
        t = line["created_at"]
        valid = [
            s
            for s in snaps
            if s["sku"] == line["sku"]
            and s["valid_from"] <= t
            and (s["valid_to"] is None or t < s["valid_to"])
            and s["in_stock"]
            and (s["stock"] is None or s["stock"] > 0)
        ]
        chosen = None
        for s in sorted(valid, key=lambda s: (s["cost"], s["supplier"])):
            key = (s["sku"], s["supplier"], s["valid_from"])
            if key not in remaining:
                remaining[key] = None if s["stock"] is None else s["stock"] - prior.get(key, 0)
            left = remaining[key]
            if left is None or left >= line["quantity"]:
                if left is not None:
                    remaining[key] = left - line["quantity"]
                chosen = s["supplier"]
                break
        result[(line["order_id"], line["sku"])] = chosen
    return result


BASE = datetime.fromisoformat(f"{D}T00:00:00+00:00")


@st.composite
def allocation_case(
    draw: st.DrawFn,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[Any, ...], int]]:
    skus = ["A", "B"]
    snaps = []
    # Usually a supplier keeps its price while its stock changes (a stable supplier order per SKU);
    # sometimes prices move and the cheapest supplier changes during the day.
    prices_move = draw(st.booleans())
    for sku in skus:
        for supplier in ["s1", "s2", "s3"]:
            cuts = sorted(set(draw(st.lists(st.integers(0, 120), min_size=1, max_size=4))))
            fixed_cost = draw(st.sampled_from(["4.00", "5.00", "6.00"]))  # ties happen
            for i, cut in enumerate(cuts):
                end = BASE + timedelta(minutes=cuts[i + 1]) if i + 1 < len(cuts) else None
                snaps.append(
                    snapshot(
                        sku,
                        supplier,
                        draw(st.sampled_from(["4.00", "5.00", "6.00"])) if prices_move else fixed_cost,
                        draw(st.sampled_from([None, None, 0, 1, 2, 3, 5, 8])),
                        BASE + timedelta(minutes=cut),
                        end,
                        in_stock=draw(st.sampled_from([True, True, True, False])),
                    )
                )
    keys = draw(
        st.lists(st.tuples(st.integers(1, 30), st.sampled_from(skus)), min_size=1, max_size=50, unique=True)
    )
    lines = [
        {
            "order_id": order_id,
            "sku": sku,
            "created_at": BASE + timedelta(minutes=draw(st.integers(0, 130))),
            "quantity": draw(st.integers(1, 4)),
            "status": draw(st.sampled_from(["paid", "paid", "placed", "refunded", "cancelled"])),
        }
        for order_id, sku in keys
    ]
    # An order's lines share its time, as in the database.
    first_time: dict[int, datetime] = {}
    for line in lines:
        line["created_at"] = first_time.setdefault(line["order_id"], line["created_at"])
    prior = {
        (s["sku"], s["supplier"], s["valid_from"]): draw(st.integers(0, 3))
        for s in snaps
        if s["stock"] and draw(st.booleans())
    }
    return lines, snaps, prior


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(allocation_case())
def test_allocation_equals_the_naive_greedy_loop_and_never_oversells(case: Any) -> None:
    lines, snaps, prior = case
    frame = lines_frame(lines)
    snapshots = allocation.normalize_snapshots(price_history_frame(snaps))
    consumed = pl.DataFrame(
        [{"sku": k[0], "supplier": k[1], "valid_from": k[2], "prior": v} for k, v in prior.items()],
        schema={"sku": pl.String, "supplier": pl.String, "valid_from": schemas.UTC_TS, "prior": pl.Int64},
    )
    out = allocation.allocate(frame, snapshots, consumed)
    got = {(r["order_id"], r["sku"]): r["supplier"] for r in out.iter_rows(named=True)}
    assert got == reference_allocation(lines, snaps, prior)
    # Served in order: fcfs_rank follows (created_at, order_id, sku).
    ordered = out.sort("fcfs_rank").select("created_at", "order_id", "sku").rows()
    assert ordered == sorted(ordered)
    balance = allocation.stock_balance(out, snapshots, consumed)
    # Prior consumption alone may already exceed stock; what this run allocated never adds to that.
    newly_oversold = balance.filter(
        (pl.col("allocated") > 0) & pl.col("stock").is_not_null() & (pl.col("remaining") < 0)
    )
    assert newly_oversold.height == 0


# ---------------------------------------------------------------- validation


def raw(orders: list[tuple[Any, ...]], lines: list[tuple[Any, ...]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    order_rows = [
        {
            "id": i,
            "customer_id": "c",
            "status": status,
            "currency": currency,
            "created_at": created,
            "updated_at": created,
            "payment_method": "card",
        }
        for i, status, currency, created in orders
    ]
    line_rows = [{"order_id": o, "sku": s, "quantity": q, "unit_price": Decimal(p)} for o, s, q, p in lines]
    return (
        pl.DataFrame(order_rows, schema=RAW_ORDERS_SCHEMA),
        pl.DataFrame(line_rows, schema=RAW_LINES_SCHEMA),
    )


def test_validation_gives_each_bad_row_exactly_one_reason() -> None:
    t1, t2 = ts("2026-03-01 10:00"), ts("2026-03-02 10:00")
    orders, lines = raw(
        [
            (10, "paid", "EUR", t1),
            (11, "paid", "USD", t1),
            (12, "placed", "EUR", t1),  # no lines at all
            (14, "lost", "EUR", t2),
            (15, "paid", "EUR", t2),
        ],
        [
            (10, "A", 1, "5.00"),
            (10, "A", 1, "5.00"),  # exact duplicate
            (10, "Y", 0, "-1.00"),  # unknown SKU wins over the other defects
            (10, "B", 0, "5.00"),
            (10, "C", 1, "-0.01"),
            (11, "A", 1, "5.00"),
            (13, "A", 1, "5.00"),  # order 13 was deleted: attributed to order 12's day
            (14, "A", 1, "5.00"),
            (15, "A", 2, "5.00"),  # same (order, sku) twice: the smaller quantity is kept
            (15, "A", 1, "5.00"),
            (15, "B", 1, "0.00"),  # free is fine
        ],
    )
    result = validation.validate_orders(
        orders, lines, known_skus=["A", "B", "C"], store_currency="EUR", fallback_day="2026-03-01"
    )
    assert result.accepted.select("order_id", "sku", "quantity").rows() == [
        (10, "A", 1),
        (15, "A", 1),
        (15, "B", 1),
    ]
    assert result.accepted.schema == pl.Schema(schemas.ORDERS_SCHEMA)
    got = sorted(result.rejects.select("day", "order_id", "sku", "reason").rows(), key=str)
    assert got == sorted(
        [
            ("2026-03-01", 10, "A", "duplicate_line"),
            ("2026-03-01", 10, "Y", "unknown_sku"),
            ("2026-03-01", 10, "B", "non_positive_quantity"),
            ("2026-03-01", 10, "C", "negative_price"),
            ("2026-03-01", 11, "A", "currency_mismatch"),
            ("2026-03-01", 12, None, "order_without_lines"),
            ("2026-03-01", 13, "A", "line_without_order"),
            ("2026-03-02", 14, "A", "unknown_status"),
            ("2026-03-02", 15, "A", "duplicate_line"),
        ],
        key=str,
    )
    assert result.rejects.filter(pl.col("order_id") == 15).get_column("quantity").to_list() == [2]
    assert result.ingested == lines.height + 1 == result.accepted.height + result.rejects.height
    assert validation.reject_counts(result.rejects)["duplicate_line"] == 2


def test_pandera_contract_refuses_frames_that_break_it() -> None:
    lines, _ = golden_inputs()
    schema = validation.orders_schema("EUR")
    schema.validate(lines)
    with pytest.raises(Exception, match="quantity"):
        schema.validate(lines.with_columns(pl.lit(0, pl.Int64).alias("quantity")))
    with pytest.raises(Exception, match="card_number"):
        schema.validate(lines.with_columns(pl.lit("4111111111111111").alias("card_number")))


def test_ingested_balance_check_fails_when_rows_go_missing() -> None:
    lines, _ = golden_inputs()
    empty = pl.DataFrame(schema=schemas.ORDER_REJECTS_SCHEMA)
    assert checks.ingested_balance(lines.height, lines, empty).passed
    failed = checks.ingested_balance(lines.height + 2, lines, empty)
    assert not failed.passed
    assert failed.metadata["unaccounted"].value == 2


# ---------------------------------------------------------------- lookback, summary


def test_lookback_days_cover_snapshots_started_earlier_with_a_cap() -> None:
    start = ts("2026-03-10 00:00")
    assert allocation.lookback_days(None, start, max_days=31, earliest_day=date(2026, 1, 1)) == ([], False)
    assert allocation.lookback_days(
        ts("2026-03-10 05:00"), start, max_days=31, earliest_day=date(2026, 1, 1)
    ) == (
        [],
        False,
    )
    assert allocation.lookback_days(
        ts("2026-03-08 23:00"), start, max_days=31, earliest_day=date(2026, 1, 1)
    ) == (
        ["2026-03-08", "2026-03-09"],
        False,
    )
    assert allocation.lookback_days(
        ts("2026-01-02 00:00"), start, max_days=2, earliest_day=date(2026, 1, 1)
    ) == (
        ["2026-03-08", "2026-03-09"],
        True,
    )
    assert allocation.lookback_days(
        ts("2025-12-30 00:00"), ts("2026-01-02 00:00"), max_days=31, earliest_day=date(2026, 1, 1)
    ) == (
        ["2026-01-01"],
        False,
    )


def test_summary_is_exact_and_limited_to_the_window() -> None:
    d = Decimal
    report = pl.DataFrame(
        [
            ("2026-03-01", "A", "s1", 1, 2, d("10.00"), d("6.00"), d("4.00")),
            ("2026-03-02", "A", "s1", 1, 1, d("0.10"), d("0.05"), d("0.05")),
            ("2026-03-02", "B", "s2", 2, 2, d("0.20"), d("0.10"), d("0.10")),
            ("2026-03-03", "B", "s2", 1, 3, d("33.33"), d("11.11"), d("22.22")),
        ],
        schema=schemas.SALES_REPORT_SCHEMA,
        orient="row",
    )
    summary = sales.sales_summary(report, window_days=2)
    assert summary.frame.get_column("day").to_list() == ["2026-03-02", "2026-03-03"]
    assert summary.frame.row(0) == ("2026-03-02", 2, 3, d("0.3000"), d("0.1500"), d("0.1500"))
    assert summary.metrics["revenue_cents_latest_day"] == 3333
    assert summary.metrics["margin_cents_window"] == 2237
    assert summary.metrics["days"] == 2
    assert "| 2026-03-03 | 3 | 33.33 | 11.11 | 22.22 | 66.7 |" in summary.markdown
    assert "2026-03-01" not in summary.markdown
    assert sales.sales_summary(None).metrics == {"days": 0}
