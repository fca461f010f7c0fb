"""The same orders pipeline against a real PostgreSQL: same rows as on SQLite, payment data untouched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from resources.orders_db import FORBIDDEN_COLUMNS, OrdersDatabase
from sandbox.orders_db import orders_metadata
from tests.orders.conftest import DAYS, make_env, run_days

pytestmark = pytest.mark.postgres
TABLES = ["orders", "order_rejects", "order_allocations", "sales_report"]


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A uniquely named schema, dropped with everything in it afterwards."""
    name = f"orders_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        engine.dispose()


def test_postgresql_and_sqlite_give_identical_tables(pg_url: str, pg_schema: str, tmp_path: Path) -> None:
    pg = make_env(pg_url, tmp_path / "wh_pg", schema=pg_schema)
    lite = make_env(f"sqlite:///{tmp_path / 'orders.db'}", tmp_path / "wh_sqlite")
    assert pg.injected == lite.injected
    first, last = DAYS[0].isoformat(), DAYS[-1].isoformat()
    run_days(pg, first, last)
    run_days(lite, first, last)
    for day in (first, last):
        for name in TABLES:
            got, want = pg.read(name, day), lite.read(name, day)
            assert got.height > 0, (name, day)
            assert got.equals(want), (name, day)


def test_postgresql_reads_allow_listed_columns_and_sees_late_changes(
    pg_url: str, pg_schema: str, tmp_path: Path
) -> None:
    env = make_env(pg_url, tmp_path / "wh", schema=pg_schema)
    day = DAYS[0].isoformat()
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement.lower())

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        run_days(env, day)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    assert [s for s in seen if "order_items" in s]
    assert not [s for s in seen if any(name in s for name in FORBIDDEN_COLUMNS)]

    before = env.read("orders", day)
    order_id = before.filter(pl.col("status") == "paid").get_column("order_id")[0]
    engine = sa.create_engine(pg_url)
    _, orders_t, _ = orders_metadata(pg_schema)
    late = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.update(orders_t).where(orders_t.c.id == order_id).values(status="cancelled", updated_at=late)
        )
    engine.dispose()
    changes = OrdersDatabase(url=pg_url, db_schema=pg_schema).changed_days(datetime(2026, 3, 15, tzinfo=UTC))
    assert changes.rows() == [(day, 1, late)]
    run_days(env, day)
    after = env.read("orders", day)
    assert set(after.filter(pl.col("order_id") == order_id).get_column("status")) == {"cancelled"}
    assert after.filter(pl.col("order_id") != order_id).equals(before.filter(pl.col("order_id") != order_id))
    allocations = env.read("order_allocations", day).filter(pl.col("order_id") == order_id)
    assert set(allocations.get_column("allocation")) == {"cancelled"}
