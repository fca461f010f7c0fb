"""The generated orders database and the allow-listed reader."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from resources.orders_db import FORBIDDEN_COLUMNS, OrdersDatabase
from sandbox.orders_db import generate_orders_db, luhn_complete, orders_metadata
from tests.orders.conftest import DAYS, SKUS


def dump(url: str) -> tuple[list[tuple], list[tuple]]:
    engine = sa.create_engine(url)
    _, orders, items = orders_metadata()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(orders).order_by(orders.c.id)).all()
        lines = conn.execute(
            sa.select(items).order_by(items.c.order_id, items.c.sku, items.c.quantity, items.c.unit_price)
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows], [tuple(r) for r in lines]


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends while the test runs."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sa.Engine, "before_cursor_execute", record)


def test_generation_is_deterministic_per_seed(tmp_path: Path) -> None:
    kwargs = {"catalog": SKUS, "days": DAYS, "orders_per_day": 80}
    first = generate_orders_db(f"sqlite:///{tmp_path / 'a.db'}", seed=5, **kwargs)
    second = generate_orders_db(f"sqlite:///{tmp_path / 'b.db'}", seed=5, **kwargs)
    generate_orders_db(f"sqlite:///{tmp_path / 'c.db'}", seed=6, **kwargs)
    assert first == second
    assert dump(f"sqlite:///{tmp_path / 'a.db'}") == dump(f"sqlite:///{tmp_path / 'b.db'}")
    assert dump(f"sqlite:///{tmp_path / 'a.db'}") != dump(f"sqlite:///{tmp_path / 'c.db'}")


def test_generated_database_holds_what_it_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    injected = generate_orders_db(url, seed=3, catalog=SKUS, days=DAYS, orders_per_day=400)
    orders, lines = dump(url)
    order_ids = {row[0] for row in orders}
    assert len(orders) == injected["orders"]
    assert len(lines) == injected["lines"]
    assert sum(1 for line in lines if line[0] not in order_ids) == injected["line_without_order"] >= 2
    assert sum(1 for line in lines if line[1] not in SKUS) == injected["unknown_sku"] >= 2
    assert sum(1 for line in lines if line[2] <= 0) == injected["non_positive_quantity"] >= 2
    assert sum(1 for line in lines if line[3] < 0) == injected["negative_price"] >= 2
    with_lines = {line[0] for line in lines}
    assert sum(1 for row in orders if row[0] not in with_lines) == injected["order_without_lines"] >= 2
    assert sum(1 for row in orders if row[3] != "EUR") > 0
    # Payment data is there, realistic, so that a leak scan means something.
    cards = [row[7] for row in orders if row[7]]
    assert len(cards) > len(orders) // 2
    assert all(luhn_complete(card[:-1]) == card for card in cards)
    assert all(row[9] and "," in row[9] for row in orders)
    assert {row[2] for row in orders} == {"placed", "paid", "cancelled", "refunded"}
    # Some cancellations and refunds land on a later day than the order.
    assert any(row[5].date() > row[4].date() for row in orders)


def test_reader_never_names_payment_columns(tmp_path: Path, statements: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    generate_orders_db(url, seed=3, catalog=SKUS, days=DAYS, orders_per_day=50)
    statements.clear()
    db = OrdersDatabase(url=url)
    window = db.read_day(DAYS[0])
    db.changed_days(datetime(2026, 1, 1, tzinfo=UTC))
    db.max_updated_at()
    db.dispose()
    assert len(statements) >= 6
    for statement in statements:
        assert not {name for name in FORBIDDEN_COLUMNS if name in statement.lower()}, statement
        assert "*" not in statement.replace("count(*)", "")
    assert FORBIDDEN_COLUMNS.isdisjoint(window.orders.columns + window.lines.columns)


def test_reader_returns_utc_times_and_exact_money(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    generate_orders_db(url, seed=3, catalog=SKUS, days=DAYS, orders_per_day=50, dirty=False)
    window = OrdersDatabase(url=url).read_day(DAYS[1])
    assert window.orders.schema["created_at"] == pl.Datetime("us", "UTC")
    assert window.lines.schema["unit_price"] == pl.Decimal(20, 4)
    days = window.orders.get_column("created_at").dt.date().unique().to_list()
    assert days == [DAYS[1]]
    _, lines = dump(url)
    in_db = {(o, s): Decimal(str(p)) for o, s, _q, p in lines}
    for order_id, sku, price in window.lines.select("order_id", "sku", "unit_price").iter_rows():
        assert price == in_db[(order_id, sku)]
    assert window.orders.height == 50


def test_lines_of_deleted_orders_go_to_the_day_of_the_nearest_lower_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    injected = generate_orders_db(url, seed=9, catalog=SKUS, days=DAYS, orders_per_day=200)
    db = OrdersDatabase(url=url)
    for day in DAYS:
        window = db.read_day(day)
        ids = set(window.orders.get_column("id").to_list())
        orphans = window.lines.filter(~pl.col("order_id").is_in(list(ids)))
        assert orphans.height == injected["per_day"][day.isoformat()]["line_without_order"]


def test_url_is_resolved_at_use_time_and_a_missing_sqlite_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.db"
    monkeypatch.setenv("ORDERS_DB_URL", f"sqlite:///{missing}")
    db = OrdersDatabase()
    with pytest.raises(FileNotFoundError, match="orders database file not found"):
        db.read_day(date(2026, 3, 1))
    assert not missing.exists()
    monkeypatch.delenv("ORDERS_DB_URL")
    assert OrdersDatabase().resolved_url() == "sqlite:///sandbox_data/orders.db"


def test_safe_url_masks_the_password() -> None:
    db = OrdersDatabase(url="postgresql+psycopg2://shop:s3cr3t-pass@db.internal:5432/orders")
    assert "s3cr3t-pass" not in db.safe_url()
    assert "db.internal" in db.safe_url()


def test_changed_days_groups_updates_by_order_day(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    generate_orders_db(url, seed=3, catalog=SKUS, days=DAYS, orders_per_day=100)
    db = OrdersDatabase(url=url)
    engine = sa.create_engine(url)
    _, orders, _ = orders_metadata()
    late = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    with engine.begin() as conn:
        first_id = conn.execute(sa.select(sa.func.min(orders.c.id))).scalar()
        conn.execute(
            sa.update(orders).where(orders.c.id == first_id).values(status="refunded", updated_at=late)
        )
    engine.dispose()
    changes = db.changed_days(datetime(2026, 3, 31, tzinfo=UTC))
    assert changes.rows() == [("2026-03-01", 1, late)]
    assert db.max_updated_at() == late
    assert db.changed_days(late).height == 0
