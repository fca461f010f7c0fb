"""The demo's data looks real: orders only in the past, price history covering their days, a
storefront page a person can read, and a storefront that remembers what it was sent."""

from __future__ import annotations

import hmac
import json
import os
import random
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from datetime import time as clock

import httpx
import polars as pl
import sqlalchemy as sa
from starlette.testclient import TestClient

from pricing_assets.history_assets import PRICE_HISTORY_KEY, history_for_day, read_history
from pricing_assets.logic.history import offers_as_of
from resources.config import load_registry
from resources.schemas import OFFERS_SCHEMA
from resources.warehouse import Warehouse
from sandbox.app import create_app
from sandbox.bootstrap import DEMO_DAYS, demo_days, make_orders_db
from sandbox.demo import DEMO_ENV, ROOT
from sandbox.demo_bootstrap import backfill_price_history
from sandbox.live_orders import place_orders
from sandbox.orders_db import orders_metadata
from sandbox.server import free_port
from sandbox.storefront_page import render
from sandbox.world import World
from tests.demo.stack import answers


def order_times(path) -> list[tuple[datetime, datetime, str]]:
    """(created_at, updated_at, status) of every order, as UTC datetimes."""
    engine = sa.create_engine(f"sqlite:///{path}")
    _, orders, _ = orders_metadata()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(orders.c.created_at, orders.c.updated_at, orders.c.status)).all()
    engine.dispose()
    return [(c.replace(tzinfo=UTC), u.replace(tzinfo=UTC), s) for c, u, s in rows]


def test_no_order_is_created_or_changed_after_now(tmp_path):
    now = datetime(2026, 6, 10, 9, 30, tzinfo=UTC)
    path = tmp_path / "orders.db"
    injected = make_orders_db(World(catalog_size=200), str(path), now=now)
    rows = order_times(path)
    assert max(created for created, _, _ in rows) <= now
    assert max(updated for _, updated, _ in rows) <= now
    # The day under way has only its first 9.5 hours of orders; the six days before are whole days.
    per_day = injected["per_day"]
    assert sorted(per_day) == [day.isoformat() for day in demo_days(now)]
    assert 0 < per_day["2026-06-10"]["orders"] < 0.6 * per_day["2026-06-09"]["orders"]


def test_live_orders_are_stamped_now_at_the_shops_prices(tmp_path):
    world = World(catalog_size=60)
    path = tmp_path / "orders.db"
    make_orders_db(world, str(path))
    engine = sa.create_engine(f"sqlite:///{path}")
    _, _, items = orders_metadata()
    with engine.connect() as conn:
        # The history's dirty lines include negative prices (injected rejects): the shop's price is positive.
        rows = conn.execute(sa.select(items.c.sku, items.c.unit_price).where(items.c.unit_price > 0)).all()
        known = dict(rows)
        top = conn.execute(sa.select(sa.func.max(items.c.order_id))).scalar_one()
    place_orders(engine, world, random.Random(3), 5)
    after = datetime.now(UTC)
    with engine.connect() as conn:
        live = conn.execute(sa.select(items.c.sku, items.c.unit_price).where(items.c.order_id > top)).all()
    engine.dispose()
    assert max(created for created, _, _ in order_times(path)) <= after
    # A live order's line costs what the same SKU cost in the generated history.
    assert live and all(known[sku] == price for sku, price in live)


def sandbox_offers(world: World, fetched_at: datetime) -> pl.DataFrame:
    """The world's offers in the warehouse's offers schema (stock known, so in stock means stock > 0)."""
    rows = [
        {
            "sku": sku,
            "supplier": supplier,
            "price": offer.price,
            "currency": offer.currency,
            "stock": offer.stock or 0,
            "in_stock": bool(offer.stock),
            "fetched_at": fetched_at,
        }
        for supplier in ("alpha", "beta", "gamma", "delta")
        for sku, offer in world.offers(supplier).items()
    ]
    return pl.DataFrame(rows).select([pl.col(c).cast(t) for c, t in OFFERS_SCHEMA.items()])


def test_price_history_backfill_covers_every_order_day_and_the_next_observation_keeps_it(tmp_path):
    now = datetime.now(UTC)
    days = demo_days(now)
    registry = load_registry()
    warehouse = Warehouse(base_dir=str(tmp_path / "warehouse"))
    offers = sandbox_offers(World(catalog_size=50), now)

    written = backfill_price_history(warehouse, registry, days, offers)

    assert written == [day.isoformat() for day in days] and len(written) == DEMO_DAYS
    history = warehouse.read_partitions(PRICE_HISTORY_KEY.path)
    assert history is not None
    assert set(history.get_column("day").unique()) == set(written)
    first_order_time = datetime.combine(days[0], clock(0, 0, 1), tzinfo=UTC)
    valid = offers_as_of(history.drop("day"), first_order_time)
    assert valid.height == offers.height  # every offer has a cost from the first second of the first day
    assert valid.get_column("cost").null_count() == 0
    # The schedule's next observation of the same offers changes nothing: no row closed and reopened.
    today = read_history(warehouse, days[-1])
    again = history_for_day(today, offers, day=days[-1], now=now, fx=registry.fx_rates())
    assert again.equals(warehouse.read(PRICE_HISTORY_KEY.path, days[-1].isoformat()).drop("day"))
    # The history is never rewritten: a second start writes nothing.
    assert backfill_price_history(warehouse, registry, days, offers) == []


def test_storefront_page_leads_with_the_counters_then_prices_then_pushes():
    world = World(catalog_size=10)
    world.counters["storefront.duplicates"] = 2
    world.storefront_prices["SKU-000001"] = {
        "sku": "SKU-000001",
        "price": "12.99",
        "currency": "EUR",
        "available": True,
        "supplier": "alpha",
        "version": 3,
    }
    world.storefront_prices["SKU-<b>"] = {"sku": "SKU-<b>", "price": "1.00", "available": False, "version": 1}
    world.pushes.append(
        {
            "key": "k" * 64,
            "batch": "batch-007",
            "prices": list(world.storefront_prices.values()),
            "received_at": 0,
        }
    )
    with TestClient(create_app(world)) as client:
        page = client.get("/storefront/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert client.get("/storefront/_pushes").json()["duplicates"] == 2  # the JSON stays
    counters, prices, pushes = (
        html.index(marker) for marker in ('id="counter-pushes"', 'id="prices"', 'id="pushes"')
    )
    assert counters < prices < pushes
    assert re.search(r'id="counter-pushes"><b>1</b>', html)
    assert re.search(r'id="counter-prices"><b>2</b>', html)
    assert re.search(r'id="counter-duplicates"><b>2</b>', html)
    assert re.search(r'id="counter-bad_signatures"><b>0</b>', html)
    assert re.search(
        r"<td>SKU-000001</td><td[^>]*>12.99</td><td>EUR</td><td>yes</td><td>alpha</td><td[^>]*>3</td>", html
    )
    assert "batch-007" in html
    assert "SKU-<b>" not in html and "SKU-&lt;b&gt;" in html  # SKUs are text, never markup
    assert "1 of 2 SKUs shown" in render(world, limit=1)
    assert "SKU-&lt;b&gt;" not in render(world, sku_prefix="SKU-0")


def signed_push(url: str, key: str, body: bytes) -> httpx.Response:
    """POST a price push signed as the storefront expects."""
    stamp = int(datetime.now(UTC).timestamp())
    digest = hmac.new(DEMO_ENV["STOREFRONT_WEBHOOK_SECRET"].encode(), f"{stamp}.".encode() + body, "sha256")
    headers = {"Idempotency-Key": key, "X-Signature": f"t={stamp},v1={digest.hexdigest()}"}
    return httpx.post(f"{url}/storefront/prices", content=body, headers=headers, timeout=10)


def test_the_sandbox_storefront_remembers_its_prices_and_keys_across_a_restart(tmp_path):
    state = tmp_path / "storefront.json"
    entry = {"sku": "SKU-000001", "price": "9.99", "currency": "EUR", "available": True, "supplier": "alpha"}
    body = json.dumps({"batch": "batch-000", "prices": [{**entry, "version": 1}]}).encode()

    def serve() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            str(port),
            "--skus",
            "20",
            "--state-file",
            str(state),
        ]
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **DEMO_ENV})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not answers(f"{url}/_health"):
            assert process.poll() is None and time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.2)
        return process, url

    process, url = serve()
    try:
        assert signed_push(url, "key-1", body).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert state.is_file()
    process, url = serve()
    try:
        pushed = httpx.get(f"{url}/storefront/_pushes", timeout=10).json()
        assert pushed["prices"]["SKU-000001"]["price"] == "9.99"
        assert [push["key"] for push in pushed["pushes"]] == ["key-1"]
        # The Idempotency-Key it applied before the restart is still known: a retry is not applied twice.
        assert signed_push(url, "key-1", body).status_code == 409
    finally:
        process.terminate()
        process.wait(timeout=30)
