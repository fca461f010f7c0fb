"""A generated orders database: the storefront's order service tables with realistic volume and dirt.

The tables follow docs/architecture.md §5 exactly, including the payment and address columns the
pipeline must never read: they hold fake but realistic values (Luhn-valid card numbers, CVCs, street
addresses) so that a
leak scan of the warehouse and the run logs has something real to look for.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

STATUSES = ("placed", "paid", "cancelled", "refunded")
# Share of orders per status (cancellations and refunds often arrive a day or more later).
_STATUS_CUM = (6, 88, 95, 100)
_PAYMENT_METHODS = ("card", "paypal", "bank_transfer")
_PAYMENT_CUM = (75, 90, 100)
_QUANTITIES = (1, 2, 3, 4, 5)
_QUANTITY_CUM = (80, 94, 97, 99, 100)
_LINE_COUNTS = (1, 2, 3, 4)
_LINE_COUNT_CUM = (55, 80, 92, 100)
_STREETS = ("Elm", "Oak", "Maple", "Cedar", "Pine", "Birch", "Willow", "Ash", "Chestnut", "Linden")
_SUFFIXES = ("Street", "Avenue", "Road", "Lane", "Way", "Boulevard")
_CITIES = (
    ("Springfield", "US"),
    ("Rivertown", "US"),
    ("Lyon", "FR"),
    ("Hamburg", "DE"),
    ("Utrecht", "NL"),
    ("Porto", "PT"),
    ("Leeds", "GB"),
    ("Graz", "AT"),
)

# Each kind of dirty row the validation must reject, with its share of a day's lines (at least one each).
DIRTY_KINDS = (
    "unknown_sku",
    "non_positive_quantity",
    "negative_price",
    "currency_mismatch",
    "line_without_order",
    "duplicate_line",
    "order_without_lines",
)
_DIRTY_SHARE = 0.002


def orders_metadata(schema: str | None = None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """The order service's source tables (docs/architecture.md §5), optionally in a schema."""
    metadata = sa.MetaData(schema=schema)
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("payment_method", sa.String(32), nullable=False),
        sa.Column("card_number", sa.String(19)),
        sa.Column("card_cvc", sa.String(4)),
        sa.Column("billing_address", sa.String(200)),
    )
    # No foreign key on purpose: the real service lets lines outlive a deleted order (dirty rows).
    items = sa.Table(
        "order_items",
        metadata,
        sa.Column("order_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
    )
    return metadata, orders, items


def luhn_complete(prefix_digits: str) -> str:
    """Append the Luhn check digit to a card number without one."""
    total = 0
    for index, char in enumerate(reversed(prefix_digits)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return prefix_digits + str((10 - total % 10) % 10)


def fake_card(rng: random.Random) -> tuple[str, str]:
    """A Luhn-valid card number (Visa, Mastercard or Amex shaped) and a matching CVC."""
    kind = rng.random()
    if kind < 0.1:  # Amex: 15 digits, 4-digit CVC
        body = rng.choice(("34", "37")) + f"{rng.randrange(10**12):012d}"
        return luhn_complete(body), f"{rng.randrange(1000, 10000)}"
    prefix = "4" if kind < 0.7 else str(rng.randrange(51, 56))
    width = 15 - len(prefix)
    body = prefix + f"{rng.randrange(10**width):0{width}d}"
    return luhn_complete(body), f"{rng.randrange(100, 1000)}"


def fake_address(rng: random.Random) -> str:
    """A street address in one of a few cities (fake, but shaped like the real thing)."""
    city, country = rng.choice(_CITIES)
    return (
        f"{rng.randrange(1, 400)} {rng.choice(_STREETS)} {rng.choice(_SUFFIXES)}, "
        f"{rng.randrange(10000, 99999)} {city}, {country}"
    )


def _sku_list(catalog: Sequence[str] | Sequence[dict[str, Any]]) -> list[str]:
    skus = [item["sku"] if isinstance(item, dict) else str(item) for item in catalog]
    if not skus:
        raise ValueError("generate_orders_db needs a non-empty catalog")
    return skus


def shop_prices(seed: int, skus: Iterable[str]) -> dict[str, Decimal]:
    """A stable shop price per SKU (store currency, two decimals)."""
    prices = {}
    for sku in skus:
        rng = random.Random(f"{seed}:price:{sku}")
        prices[sku] = Decimal(rng.randrange(199, 19999)) / 100
    return prices


def _late_update(rng: random.Random, status: str, created: datetime) -> datetime:
    if status == "paid":
        return created + timedelta(seconds=rng.randrange(5, 300))
    if status == "cancelled":
        return created + timedelta(minutes=rng.randrange(1, 36 * 60))
    if status == "refunded":
        return created + timedelta(minutes=rng.randrange(60, 72 * 60))
    return created


def _as_of(status: str, created: datetime, updated: datetime, until: datetime | None) -> tuple[str, datetime]:
    """The order's status and last update as seen at `until`: a change after it has not happened yet."""
    if until is None or updated <= until:
        return status, updated
    if status in ("cancelled", "refunded"):
        # Paid first (within minutes), cancelled or refunded later: seen before that, it is paid.
        return "paid", min(created + timedelta(seconds=60), until)
    return status, until


def _generate_day(
    rng: random.Random,
    *,
    day: date,
    first_id: int,
    orders_per_day: int,
    skus: list[str],
    prices: dict[str, Decimal],
    store_currency: str,
    dirty: bool,
    until: datetime | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter[str]]:
    """One day's orders and lines, none created after `until`; ids increase with created_at."""
    midnight = datetime.combine(day, time(0), tzinfo=UTC)
    # Second resolution, so busy days have several orders at the same instant (FCFS ties by id).
    instants = sorted(rng.randrange(86_400) for _ in range(orders_per_day))
    if until is not None:
        # A day still under way has only the orders placed so far (the live ones come later).
        instants = [second for second in instants if midnight + timedelta(seconds=second) <= until]
    counts: Counter[str] = Counter()
    orders: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    lines_of: dict[int, list[dict[str, Any]]] = {}
    for offset, second in enumerate(instants):
        order_id = first_id + offset
        created = midnight + timedelta(seconds=second)
        status = rng.choices(STATUSES, cum_weights=_STATUS_CUM)[0]
        method = rng.choices(_PAYMENT_METHODS, cum_weights=_PAYMENT_CUM)[0]
        card_number, card_cvc = fake_card(rng) if method == "card" else (None, None)
        status, updated = _as_of(status, created, _late_update(rng, status, created), until)
        orders.append(
            {
                "id": order_id,
                "customer_id": rng.randrange(1, max(100, orders_per_day // 3)),
                "status": status,
                "currency": store_currency,
                "created_at": created,
                "updated_at": updated,
                "payment_method": method,
                "card_number": card_number,
                "card_cvc": card_cvc,
                "billing_address": fake_address(rng),
            }
        )
        count = rng.choices(_LINE_COUNTS, cum_weights=_LINE_COUNT_CUM)[0]
        chosen = rng.sample(skus, k=min(len(skus), count))
        order_lines = [
            {
                "order_id": order_id,
                "sku": sku,
                "quantity": rng.choices(_QUANTITIES, cum_weights=_QUANTITY_CUM)[0],
                "unit_price": prices[sku],
            }
            for sku in chosen
        ]
        lines_of[order_id] = order_lines
    if dirty and len(orders) >= 3:
        _inject_dirt(rng, orders, lines_of, skus, prices, store_currency, counts)
    for order_lines in lines_of.values():
        lines.extend(order_lines)
    counts["orders"] = len(orders)
    counts["lines"] = len(lines)
    rejected_lines = sum(counts[kind] for kind in DIRTY_KINDS if kind != "order_without_lines")
    counts["clean_lines"] = len(lines) - rejected_lines
    return orders, lines, counts


def _inject_dirt(
    rng: random.Random,
    orders: list[dict[str, Any]],
    lines_of: dict[int, list[dict[str, Any]]],
    skus: list[str],
    prices: dict[str, Decimal],
    store_currency: str,
    counts: Counter[str],
) -> None:
    """Give each kind of dirty row a few instances, each with exactly one defect."""
    per_kind = max(1, round(_DIRTY_SHARE * sum(len(v) for v in lines_of.values())))
    # The first order of the day stays clean: lines of deleted orders are found by id range from it.
    victims = rng.sample(range(1, len(orders)), k=min(len(orders) - 1, per_kind * 3))
    deleted = set(victims[:per_kind])
    foreign = set(victims[per_kind : 2 * per_kind])
    empty = set(victims[2 * per_kind :])
    for index in sorted(deleted):
        counts["line_without_order"] += len(lines_of[orders[index]["id"]])
    for index in sorted(foreign):
        orders[index]["currency"] = "USD" if store_currency != "USD" else "EUR"
        counts["currency_mismatch"] += len(lines_of[orders[index]["id"]])
    for index in sorted(empty):
        lines_of[orders[index]["id"]] = []
        counts["order_without_lines"] += 1
    clean_ids = [
        order["id"]
        for i, order in enumerate(orders)
        if i not in deleted and i not in foreign and i not in empty
    ]
    # Duplicates first, so that they copy clean lines only.
    for _ in range(per_kind):
        order_lines = lines_of[rng.choice(clean_ids)]
        order_lines.append(dict(rng.choice(order_lines)))
        counts["duplicate_line"] += 1
    for kind in ("unknown_sku", "non_positive_quantity", "negative_price"):
        for _ in range(per_kind):
            order_id = rng.choice(clean_ids)
            taken = {line["sku"] for line in lines_of[order_id]}
            free = [sku for sku in rng.sample(skus, k=min(len(skus), 8)) if sku not in taken]
            if not free:
                continue
            line = {"order_id": order_id, "sku": free[0], "quantity": 1, "unit_price": prices[free[0]]}
            if kind == "unknown_sku":
                line["sku"] = f"UNKNOWN-{rng.randrange(10**6):06d}"
            elif kind == "non_positive_quantity":
                line["quantity"] = rng.choice((0, -1, -2))
            else:
                line["unit_price"] = -prices[free[0]]
            lines_of[order_id].append(line)
            counts[kind] += 1
    # Deleted orders vanish from `orders`; their lines stay behind.
    for index in sorted(deleted, reverse=True):
        del orders[index]


def generate_orders_db(
    url: str,
    *,
    seed: int,
    catalog: Sequence[str] | Sequence[dict[str, Any]],
    days: Sequence[date],
    orders_per_day: int,
    dirty: bool = True,
    schema: str | None = None,
    store_currency: str = "EUR",
    chunk_rows: int = 50_000,
    until: datetime | None = None,
) -> dict[str, Any]:
    """(Re)create the orders tables at a SQLAlchemy URL and fill them; returns what was injected.

    Deterministic for a seed: each day draws from its own seeded generator, so adding a day leaves
    the others unchanged except for their order ids. With `until` (the demo passes now), no order is
    created or updated after it: a day still under way has only the orders placed so far, and a
    cancellation or refund that would come later has not happened yet. The result has totals per kind
    plus `per_day` (ISO day -> counts), comparable with the pipeline's `order_rejects` reasons.
    """
    if until is not None and until.tzinfo is None:
        raise ValueError("until must be timezone-aware (UTC)")
    skus = _sku_list(catalog)
    prices = shop_prices(seed, skus)
    metadata, orders_table, items_table = orders_metadata(schema)
    engine = sa.create_engine(url)
    totals: Counter[str] = Counter()
    per_day: dict[str, dict[str, int]] = {}
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            metadata.create_all(conn)
        next_id = 1
        for day in sorted(days):
            rng = random.Random(f"{seed}:orders:{day.isoformat()}")
            orders, lines, counts = _generate_day(
                rng,
                day=day,
                first_id=next_id,
                orders_per_day=orders_per_day,
                skus=skus,
                prices=prices,
                store_currency=store_currency,
                dirty=dirty,
                until=until,
            )
            next_id += orders_per_day
            with engine.begin() as conn:
                for start in range(0, len(orders), chunk_rows):
                    conn.execute(orders_table.insert(), orders[start : start + chunk_rows])
                for start in range(0, len(lines), chunk_rows):
                    conn.execute(items_table.insert(), lines[start : start + chunk_rows])
            per_day[day.isoformat()] = dict(counts)
            totals.update(counts)
    finally:
        engine.dispose()
    return {**{kind: 0 for kind in DIRTY_KINDS}, **dict(totals), "per_day": per_day}
