"""The storefront's orders database (docs/architecture.md §5): allow-listed reads of a window into polars."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl
import sqlalchemy as sa
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from resources.schemas import MONEY, UTC_TS

DEFAULT_ORDERS_DB_URL = "sqlite:///sandbox_data/orders.db"

# The only columns this module can name, with the types used to bind parameters. The payment and
# address columns (card_number, card_cvc, billing_address) are deliberately absent: a statement built
# from these tables cannot select them, so they never enter the process, the logs or the warehouse.
_ORDER_COLUMN_TYPES: dict[str, sa.types.TypeEngine | None] = {
    "id": sa.BigInteger(),
    "customer_id": None,
    "status": sa.String(),
    "currency": sa.String(),
    "created_at": sa.DateTime(timezone=True),
    "updated_at": sa.DateTime(timezone=True),
    "payment_method": sa.String(),
}
_LINE_COLUMN_TYPES: dict[str, sa.types.TypeEngine | None] = {
    "order_id": sa.BigInteger(),
    "sku": sa.String(),
    "quantity": sa.Integer(),
    "unit_price": sa.Numeric(),
}
ORDER_COLUMNS: tuple[str, ...] = tuple(_ORDER_COLUMN_TYPES)
LINE_COLUMNS: tuple[str, ...] = tuple(_LINE_COLUMN_TYPES)
FORBIDDEN_COLUMNS: frozenset[str] = frozenset({"card_number", "card_cvc", "billing_address"})

RAW_ORDERS_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "customer_id": pl.String(),
    "status": pl.String(),
    "currency": pl.String(),
    "created_at": UTC_TS,
    "updated_at": UTC_TS,
    "payment_method": pl.String(),
}
RAW_LINES_SCHEMA: dict[str, pl.DataType] = {
    "order_id": pl.Int64(),
    "sku": pl.String(),
    "quantity": pl.Int64(),
    "unit_price": MONEY,
}
_SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S%.f"


@dataclass(frozen=True)
class OrdersWindow:
    """What the database holds for one time window, before any validation."""

    start: datetime
    end: datetime
    orders: pl.DataFrame  # orders created in [start, end), RAW_ORDERS_SCHEMA
    lines: pl.DataFrame  # their lines plus orphan lines attributed to the window, RAW_LINES_SCHEMA


def _tables(schema: str | None) -> tuple[sa.TableClause, sa.TableClause]:
    orders = sa.table(
        "orders", *(sa.column(name, kind) for name, kind in _ORDER_COLUMN_TYPES.items()), schema=schema
    )
    items = sa.table(
        "order_items", *(sa.column(name, kind) for name, kind in _LINE_COLUMN_TYPES.items()), schema=schema
    )
    return orders, items


def utc_day_window(day: date) -> tuple[datetime, datetime]:
    """[midnight, next midnight) of a UTC day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC datetimes")
    return value.astimezone(UTC)


def _to_utc_column(frame: pl.DataFrame, name: str) -> pl.Expr:
    """SQLite hands back text, PostgreSQL aware datetimes; both become Datetime(us, UTC)."""
    dtype = frame.schema[name]
    column = pl.col(name)
    if dtype == pl.String:
        return column.str.to_datetime(_SQLITE_TS_FORMAT, time_unit="us", strict=True).dt.replace_time_zone(
            "UTC"
        )
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return column.dt.cast_time_unit("us").dt.replace_time_zone("UTC")
        return column.dt.cast_time_unit("us").dt.convert_time_zone("UTC")
    if dtype == pl.Null:
        return column.cast(UTC_TS)
    raise TypeError(f"column {name!r}: unexpected database type {dtype}")


class OrdersDatabase(ConfigurableResource):
    """The storefront's orders database, read per time window through an allow-list of columns."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means $ORDERS_DB_URL, else sqlite:///sandbox_data/orders.db. "
        "Put credentials in the environment variable, not here.",
    )
    db_schema: str | None = Field(default=None, description="Schema holding the tables (PostgreSQL).")
    fetch_batch_rows: int = Field(default=200_000, ge=1_000, description="Rows per fetch from the cursor.")
    _engine: sa.Engine | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        """The URL in use; resolved at use time so tests and runs can point it anywhere."""
        return self.url or os.environ.get("ORDERS_DB_URL") or DEFAULT_ORDERS_DB_URL

    def safe_url(self) -> str:
        """The URL with any password masked, fit for logs and metadata."""
        return sa.make_url(self.resolved_url()).render_as_string(hide_password=True)

    def engine(self) -> sa.Engine:
        """A pooled engine for the URL (created on first use, disposed when the run ends)."""
        if self._engine is None:
            url = sa.make_url(self.resolved_url())
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                path = Path(url.database)
                if not path.exists():
                    # SQLite would silently create an empty file and fail later on a missing table.
                    raise FileNotFoundError(
                        f"orders database file not found: {path} (generate it with "
                        "`python -m sandbox --orders-db ...` or set ORDERS_DB_URL)"
                    )
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        return self._engine

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Release pooled connections when the run ends."""
        self.dispose()

    def dispose(self) -> None:
        """Close pooled connections (safe to call twice)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with self.engine().connect() as conn:
            yield conn

    def _fetch(self, conn: sa.Connection, statement: sa.Select) -> pl.DataFrame:
        result = conn.execute(statement)
        names = list(result.keys())
        # Measured: building SQLAlchemy Row objects doubles the cost of a million-line day, so rows
        # are taken straight from the DBAPI cursor (types are already settled by the SELECT's casts).
        cursor = result.cursor
        frames = []
        while rows := cursor.fetchmany(self.fetch_batch_rows):
            frames.append(pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None))
        result.close()
        if not frames:
            return pl.DataFrame(schema=dict.fromkeys(names, pl.Null()))
        return pl.concat(frames, how="vertical_relaxed")

    def read_window(self, start: datetime, end: datetime) -> OrdersWindow:
        """Orders created in [start, end) with their lines, plus lines whose order no longer exists.

        Order ids are a sequence, so they grow with time: the window's lines are read by order-id
        range, from its lowest id up to the first id created at or after `end`. A line in that range
        whose order exists nowhere is a line without an order, attributed to this window (the day of
        the nearest lower order id); lines of other windows' orders are left to those windows.
        """
        start, end = _as_utc(start), _as_utc(end)
        orders_t, items_t = _tables(self.db_schema)
        orders_q = sa.select(*[orders_t.c[name] for name in ORDER_COLUMNS]).where(
            orders_t.c.created_at >= start, orders_t.c.created_at < end
        )
        next_q = (
            sa.select(orders_t.c.id)
            .where(orders_t.c.created_at >= end)
            .order_by(orders_t.c.created_at, orders_t.c.id)
            .limit(1)
        )
        with self._connect() as conn:
            orders = _orders_frame(self._fetch(conn, orders_q))
            if orders.height == 0:
                return OrdersWindow(start, end, orders, pl.DataFrame(schema=RAW_LINES_SCHEMA))
            ids = orders.get_column("id")
            following = conn.execute(next_q).scalar()
            # A range scan on order_items(order_id) is much cheaper than joining on created_at.
            lines_q = sa.select(
                items_t.c.order_id,
                items_t.c.sku,
                items_t.c.quantity,
                # Text keeps money exact on every backend (SQLite stores NUMERIC as binary floats).
                sa.cast(items_t.c.unit_price, sa.String).label("unit_price"),
            ).where(items_t.c.order_id >= ids.min())
            if following is not None:
                lines_q = lines_q.where(items_t.c.order_id < max(int(following), int(ids.max()) + 1))
            lines = _lines_frame(self._fetch(conn, lines_q))
            outside = lines.filter(~pl.col("order_id").is_in(ids.implode())).get_column("order_id").unique()
            elsewhere: list[int] = []
            for offset in range(0, outside.len(), 1000):
                chunk = outside.slice(offset, 1000).to_list()
                found = conn.execute(sa.select(orders_t.c.id).where(orders_t.c.id.in_(chunk))).scalars()
                elsewhere.extend(found)
        if elsewhere:
            lines = lines.filter(~pl.col("order_id").is_in(elsewhere))
        return OrdersWindow(start=start, end=end, orders=orders, lines=lines)

    def read_day(self, day: date) -> OrdersWindow:
        """Orders created on one UTC day (see read_window)."""
        return self.read_window(*utc_day_window(day))

    def changed_days(self, since: datetime, until: datetime | None = None) -> pl.DataFrame:
        """Days (by created_at) holding orders updated in (since, until]: day, orders, max_updated_at.

        This is the incremental half of reading by `updated_at`: a late status change makes its
        order's day due for re-materialization.
        """
        orders_t, _ = _tables(self.db_schema)
        query = sa.select(orders_t.c.created_at, orders_t.c.updated_at).where(
            orders_t.c.updated_at > _as_utc(since)
        )
        if until is not None:
            query = query.where(orders_t.c.updated_at <= _as_utc(until))
        with self._connect() as conn:
            frame = self._fetch(conn, query)
        if frame.height == 0:
            return pl.DataFrame(schema={"day": pl.String(), "orders": pl.Int64(), "max_updated_at": UTC_TS})
        frame = frame.with_columns(
            _to_utc_column(frame, "created_at").alias("created_at"),
            _to_utc_column(frame, "updated_at").alias("updated_at"),
        )
        return (
            frame.group_by(pl.col("created_at").dt.strftime("%Y-%m-%d").alias("day"))
            .agg(pl.len().cast(pl.Int64).alias("orders"), pl.col("updated_at").max().alias("max_updated_at"))
            .sort("day")
        )

    def max_updated_at(self) -> datetime | None:
        """The latest updated_at in the database (the starting watermark for change detection)."""
        orders_t, _ = _tables(self.db_schema)
        with self._connect() as conn:
            frame = self._fetch(conn, sa.select(sa.func.max(orders_t.c.updated_at).label("updated_at")))
        if frame.height == 0 or frame.get_column("updated_at").null_count() == frame.height:
            return None
        value = frame.select(_to_utc_column(frame, "updated_at")).item()
        return value


def _orders_frame(frame: pl.DataFrame) -> pl.DataFrame:
    if frame.height == 0:
        return pl.DataFrame(schema=RAW_ORDERS_SCHEMA)
    return frame.select(
        pl.col("id").cast(pl.Int64),
        pl.col("customer_id").cast(pl.String),
        pl.col("status").cast(pl.String),
        pl.col("currency").cast(pl.String),
        _to_utc_column(frame, "created_at").alias("created_at"),
        _to_utc_column(frame, "updated_at").alias("updated_at"),
        pl.col("payment_method").cast(pl.String),
    )


def _lines_frame(frame: pl.DataFrame) -> pl.DataFrame:
    if frame.height == 0:
        return pl.DataFrame(schema=RAW_LINES_SCHEMA)
    return frame.select(
        pl.col("order_id").cast(pl.Int64),
        pl.col("sku").cast(pl.String),
        pl.col("quantity").cast(pl.Int64),
        pl.col("unit_price").cast(pl.String).str.to_decimal(scale=MONEY.scale).cast(MONEY),
    )
