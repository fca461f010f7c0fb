"""The sandbox itself: deterministic world, control endpoints, live orders for the demo."""

from __future__ import annotations

import random

import sqlalchemy as sa
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.bootstrap import make_orders_db
from sandbox.live_orders import place_orders
from sandbox.orders_db import orders_metadata
from sandbox.world import World


def test_world_is_deterministic_per_seed_and_generation():
    assert World(seed=3, catalog_size=50).offers("alpha") == World(seed=3, catalog_size=50).offers("alpha")
    assert World(seed=3, catalog_size=50).offers("alpha") != World(seed=4, catalog_size=50).offers("alpha")
    moved = World(seed=3, catalog_size=50)
    moved.generation = 1
    assert moved.offers("alpha") != World(seed=3, catalog_size=50).offers("alpha")


def test_control_endpoints_set_and_clear_faults():
    world = World(catalog_size=10)
    with TestClient(create_app(world)) as client:
        client.post("/_control/faults", json={"alpha": {"outage": True}})
        assert world.fault("alpha", "outage") is True
        client.post("/_control/faults", json={"alpha": None})
        assert world.faults == {}
        assert client.post("/_control/market").json() == {"generation": 1}


def test_background_tasks_run_while_serving_and_stop_after():
    ran: list[str] = []

    async def task() -> None:
        ran.append("started")

    with TestClient(create_app(World(catalog_size=5), background=[task])) as client:
        assert client.get("/_health").status_code == 200
    assert ran == ["started"]


def test_live_orders_are_placed_now_with_lines(tmp_path):
    world = World(catalog_size=30)
    path = tmp_path / "orders.db"
    make_orders_db(world, str(path))
    engine = sa.create_engine(f"sqlite:///{path}")
    _, orders, items = orders_metadata()
    with engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
        top = conn.execute(sa.select(sa.func.max(orders.c.id))).scalar_one()
    assert place_orders(engine, world, random.Random(1), 4) == 4
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one() == before + 4
        new_lines = conn.execute(
            sa.select(sa.func.count()).select_from(items).where(items.c.order_id > top)
        ).scalar_one()
    engine.dispose()
    assert 4 <= new_lines <= 12
