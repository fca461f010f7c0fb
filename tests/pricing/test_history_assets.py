"""price_history as an asset: re-runs never duplicate rows; a changed offer closes one row and opens one."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest
from dagster import DagsterInstance, build_schedule_context

from pricing_assets.definitions import build_definitions_without_resources
from pricing_assets.history_assets import HISTORY_JOB_NAME, history_for_day
from pricing_assets.logic.history import offers_as_of
from resources.config import load_registry
from resources.schemas import PRICE_HISTORY_SCHEMA
from resources.warehouse import Warehouse
from tests.pricing.wiring import bind, resources, write_offers


@pytest.fixture
def history(warehouse_dir):
    registry = load_registry()
    defs = bind(build_definitions_without_resources(registry), resources(warehouse_dir))
    warehouse = Warehouse(base_dir=str(warehouse_dir))
    instance = DagsterInstance.ephemeral()
    today = datetime.now(UTC).date().isoformat()

    def run(day: str = today) -> pl.DataFrame:
        result = defs.resolve_job_def(HISTORY_JOB_NAME).execute_in_process(
            instance=instance, partition_key=day
        )
        assert result.success
        return warehouse.read(["price_history"], day)

    return warehouse, run, today


def seed_offers(warehouse: Warehouse, a_price: str = "10.00") -> None:
    write_offers(warehouse, "alpha", "batch-000", {"SKU-A": a_price, "SKU-B": "5.00"})
    write_offers(warehouse, "alpha", "batch-001", {"SKU-C": "7.00"})
    write_offers(warehouse, "beta", "batch-000", {"SKU-A": "11.00"}, currency="USD", stock=None)


def test_rerunning_with_the_same_offers_adds_no_rows(history):
    warehouse, run, today = history
    seed_offers(warehouse)
    first = run()
    assert first.schema == pl.Schema({**PRICE_HISTORY_SCHEMA, "day": pl.String})
    assert first.height == 4  # every batch of every supplier is observed
    assert first.get_column("valid_to").null_count() == 4
    assert set(first.get_column("day")) == {today}
    # USD offers get their store-currency cost from the registry's FX table (0.92).
    beta = first.filter(pl.col("supplier") == "beta").row(0, named=True)
    assert beta["cost"] == Decimal("10.12")
    for _ in range(2):
        assert run().equals(first)


def test_a_changed_offer_closes_one_row_and_opens_one(history):
    warehouse, run, _ = history
    seed_offers(warehouse)
    before = run()
    seed_offers(warehouse, a_price="12.00")
    after = run()
    assert after.height == before.height + 1
    rows = after.filter((pl.col("sku") == "SKU-A") & (pl.col("supplier") == "alpha")).sort("valid_from")
    assert rows.get_column("price").to_list() == [Decimal("10"), Decimal("12")]
    closed, opened = rows.row(0, named=True), rows.row(1, named=True)
    assert closed["valid_to"] == opened["valid_from"]
    assert opened["valid_to"] is None
    # Everything else is untouched, and a re-run after the change adds nothing more.
    unchanged = after.filter(~((pl.col("sku") == "SKU-A") & (pl.col("supplier") == "alpha")))
    assert unchanged.equals(before.filter(~((pl.col("sku") == "SKU-A") & (pl.col("supplier") == "alpha"))))
    assert run().equals(after)
    # The as-of query answers with the old price before the change and the new one after it.
    at_before = offers_as_of(after, closed["valid_to"] - timedelta(microseconds=1))
    at_after = offers_as_of(after, closed["valid_to"])
    price = lambda frame: frame.filter((pl.col("sku") == "SKU-A") & (pl.col("supplier") == "alpha"))["price"]  # noqa: E731
    assert price(at_before).to_list() == [Decimal("10")]
    assert price(at_after).to_list() == [Decimal("12")]


def test_withdrawn_offer_is_closed_and_a_supplier_without_files_keeps_its_rows(history):
    warehouse, run, _ = history
    seed_offers(warehouse)
    run()
    write_offers(warehouse, "alpha", "batch-000", {"SKU-A": "10.00"})  # SKU-B withdrawn by alpha
    after = run()
    b = after.filter(pl.col("sku") == "SKU-B").row(0, named=True)
    assert b["valid_to"] is not None
    assert after.filter(pl.col("supplier") == "beta").get_column("valid_to").null_count() == 1


def test_a_past_day_is_rebuilt_from_the_log_without_observing(history):
    warehouse, run, _ = history
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    seed_offers(warehouse)
    run()
    assert run(yesterday).is_empty()  # nothing was valid yesterday: the offers were first seen today
    assert run().height == 4


def test_future_day_is_refused():
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="future"):
        history_for_day(None, pl.DataFrame(), day=now.date() + timedelta(days=1), now=now, fx={})


def test_schedule_requests_todays_partition_with_a_deterministic_key(warehouse_dir):
    defs = bind(build_definitions_without_resources(load_registry()), resources(warehouse_dir))
    schedule = defs.resolve_schedule_def("price_history_schedule")
    tick = datetime(2026, 3, 1, 23, 55, tzinfo=UTC)
    repository = defs.get_repository_def()
    requests = [
        schedule.evaluate_tick(
            build_schedule_context(scheduled_execution_time=tick, repository_def=repository)
        )
        for _ in range(2)
    ]
    (first,), (second,) = (r.run_requests for r in requests)
    assert first.partition_key == "2026-03-01"
    assert first.run_key == second.run_key == "price_history-2026-03-01T23:55:00+00:00"


def test_today_carries_open_rows_from_the_latest_day_and_a_past_day_picks_up_later_closings(history):
    warehouse, run, _ = history
    yesterday_date = datetime.now(UTC).date() - timedelta(days=1)
    yesterday = yesterday_date.isoformat()
    opened_at = datetime.combine(yesterday_date, datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    seed_offers(warehouse)
    earlier = pl.DataFrame(
        {
            "sku": ["SKU-A", "SKU-Z"],
            "supplier": ["alpha", "alpha"],
            "price": [Decimal("10"), Decimal("3")],
            "currency": ["EUR", "EUR"],
            "cost": [Decimal("10"), Decimal("3")],
            "stock": [5, 5],
            "in_stock": [True, True],
            "valid_from": [opened_at, opened_at - timedelta(hours=1)],
            "valid_to": [None, opened_at],  # SKU-Z's offer ended yesterday
        },
        schema=PRICE_HISTORY_SCHEMA,
    ).with_columns(day=pl.lit(yesterday))
    warehouse.write(earlier, ["price_history"], yesterday)

    seed_offers(warehouse, a_price="12.00")
    rows = run()
    assert "SKU-Z" not in rows.get_column("sku").to_list()  # closed before today began
    a = rows.filter((pl.col("sku") == "SKU-A") & (pl.col("supplier") == "alpha")).sort("valid_from")
    # Yesterday's open row is carried, then closed by today's change; the new price opens one row.
    assert a.get_column("valid_from").to_list()[0] == opened_at
    assert a.get_column("price").to_list() == [Decimal("10"), Decimal("12")]
    closed_at = a.get_column("valid_to").to_list()[0]
    assert closed_at is not None

    rebuilt = run(yesterday)
    a_then = rebuilt.filter(pl.col("sku") == "SKU-A").row(0, named=True)
    assert a_then["valid_to"] == closed_at  # the closing recorded today reaches yesterday's file
    assert rebuilt.filter(pl.col("sku") == "SKU-Z").height == 1
