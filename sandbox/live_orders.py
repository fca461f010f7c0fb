"""Live orders for the demo: the sandbox keeps placing orders "now", as a running shop would."""

import asyncio
import logging
import random
from datetime import UTC, datetime

import sqlalchemy as sa

from sandbox.orders_db import fake_address, fake_card, orders_metadata, shop_prices
from sandbox.world import World

log = logging.getLogger("sandbox.live_orders")


def place_orders(engine: sa.Engine, world: World, rng: random.Random, count: int) -> int:
    """Insert `count` orders created now (placed or paid, 1-3 lines at the shop's prices); return how many."""
    _, orders, items = orders_metadata()
    skus = [row["sku"] for row in world.catalog if row["active"]]
    with engine.begin() as conn:
        next_id = (conn.execute(sa.select(sa.func.max(orders.c.id))).scalar() or 0) + 1
        now = datetime.now(UTC)
        order_rows, item_rows = [], []
        for order_id in range(next_id, next_id + count):
            card_number, card_cvc = fake_card(rng)
            order_rows.append(
                {
                    "id": order_id,
                    "customer_id": rng.randrange(1, 500),
                    "status": rng.choice(("placed", "paid", "paid")),
                    "currency": "EUR",
                    "created_at": now,
                    "updated_at": now,
                    "payment_method": "card",
                    "card_number": card_number,
                    "card_cvc": card_cvc,
                    "billing_address": fake_address(rng),
                }
            )
            chosen = rng.sample(skus, k=rng.randint(1, 3))
            prices = shop_prices(world.seed, chosen)
            item_rows.extend(
                {"order_id": order_id, "sku": sku, "quantity": rng.randint(1, 3), "unit_price": prices[sku]}
                for sku in chosen
            )
        conn.execute(orders.insert(), order_rows)
        conn.execute(items.insert(), item_rows)
    return count


async def run_live_orders(url: str, world: World, per_minute: int, max_minutes: int = 24 * 60) -> None:
    """Place `per_minute` orders every minute, for at most max_minutes (a bounded loop)."""
    engine = sa.create_engine(url)
    rng = world.rng("live-orders")
    try:
        for _ in range(max_minutes):
            await asyncio.sleep(60)
            placed = await asyncio.to_thread(place_orders, engine, world, rng, per_minute)
            world.counters["orders.live_placed"] += placed
    except asyncio.CancelledError:
        pass
    finally:
        engine.dispose()
