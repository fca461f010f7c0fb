"""What the storefront should show, computed independently of the project's code.

The soak compares the live storefront with this: plain Decimal arithmetic over the sandbox's ground
truth, written from the rules in docs/pricing.md, never by calling `pricing_assets.logic` (a shared bug
would otherwise agree with itself). Only the configuration is shared: the registry YAML (FX, supplier
order, batches) and the SERVICE_CONFIG the soak itself writes.

- best offer: candidates have a positive price, a currency in the FX table and stock > 0 or unknown;
  cost = price x rate, rounded half-even to 4 decimals; lowest cost wins, ties by registry priority,
  then registry position, then supplier id;
- price: markup percent (SKU override, else category, else global) on the cost, then rounding (none:
  half-up to 4 decimals; ending_99: the smallest X.99 at or above; step: nearest multiple, halves up),
  never below cost x (1 + min_margin): a price under the floor moves up to the floor's rounded-up value;
- guard: a change of more than max_change_pct against the last pushed price is held (a last price <= 0
  always holds), as is every change of a batch where more than max_batch_change_share of the SKUs change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

FOUR = Decimal("0.0001")
NINETY_NINE = Decimal("0.99")


@dataclass(frozen=True)
class Rules:
    """The configuration the expected prices depend on."""

    store_currency: str
    fx: Mapping[str, Decimal]  # 1 unit of the key currency in store currency; the store currency is 1
    supplier_order: tuple[str, ...]  # tie-break order
    batches: int
    percent: Decimal = Decimal(15)
    categories: Mapping[str, Decimal] = field(default_factory=dict)
    skus: Mapping[str, Decimal] = field(default_factory=dict)
    rounding: str = "none"
    step: Decimal = Decimal("0.05")
    min_margin: Decimal = Decimal("0.05")
    max_change_pct: Decimal = Decimal(30)
    max_batch_change_share: Decimal = Decimal("0.5")


def load_rules(registry: Mapping[str, Any], service_config: Mapping[str, Any]) -> Rules:
    """Rules from a parsed registry YAML and a SERVICE_CONFIG dict (defaults as docs/configuration.md)."""
    store = str(registry.get("store_currency", "EUR"))
    fx = {store: Decimal(1), **{str(k): Decimal(str(v)) for k, v in (registry.get("fx") or {}).items()}}
    suppliers = list(registry["suppliers"])
    indexed = sorted(enumerate(suppliers), key=lambda item: (int(item[1].get("priority", 100)), item[0]))
    markup = service_config.get("markup") or {}
    rounding = markup.get("rounding") or {}
    guard = service_config.get("guard") or {}
    return Rules(
        store_currency=store,
        fx=fx,
        supplier_order=tuple(str(entry["id"]) for _, entry in indexed),
        batches=int(registry.get("catalog_batches", 16)),
        percent=Decimal(str(markup.get("percent", "15"))),
        categories={k: Decimal(str(v)) for k, v in (markup.get("categories") or {}).items()},
        skus={k: Decimal(str(v)) for k, v in (markup.get("skus") or {}).items()},
        rounding=str(rounding.get("mode", "none")),
        step=Decimal(str(rounding.get("step", "0.05"))),
        min_margin=Decimal(str(markup.get("min_margin", "0.05"))),
        max_change_pct=Decimal(str(guard.get("max_change_pct", "30"))),
        max_batch_change_share=Decimal(str(guard.get("max_batch_change_share", "0.5"))),
    )


@dataclass(frozen=True)
class Offer:
    """One supplier's offer for one SKU, as the sandbox serves it."""

    price: Decimal
    currency: str
    stock: int | None


@dataclass(frozen=True)
class Expected:
    """What the storefront should show for one SKU."""

    available: bool
    price: Decimal | None = None
    supplier: str | None = None
    cost: Decimal | None = None

    def describe(self) -> str:
        """Short text for reports."""
        return f"{self.price} from {self.supplier}" if self.available else "unavailable"


UNAVAILABLE = Expected(available=False)


def batch_of(sku: str, batches: int) -> str:
    """The SKU's catalog batch: the first 8 bytes of MD5(sku) as an unsigned big-endian int, mod N."""
    return f"batch-{int(hashlib.md5(sku.encode('utf-8')).hexdigest()[:16], 16) % batches:03d}"


def best_offer(offers: Mapping[str, Offer], rules: Rules) -> tuple[str, Decimal] | None:
    """(supplier, cost in store currency) of the winning candidate, or None when there is none."""
    rank = {supplier: index for index, supplier in enumerate(rules.supplier_order)}
    best: tuple[Decimal, int, str] | None = None
    for supplier, offer in offers.items():
        if offer.price <= 0 or offer.currency not in rules.fx:
            continue
        if offer.stock is not None and offer.stock <= 0:
            continue
        cost = (offer.price * rules.fx[offer.currency]).quantize(FOUR, rounding=ROUND_HALF_EVEN)
        candidate = (cost, rank.get(supplier, len(rank)), supplier)
        if best is None or candidate < best:
            best = candidate
    return None if best is None else (best[2], best[0])


def _round(amount: Decimal, rules: Rules, mode: str = ROUND_HALF_UP) -> Decimal:
    """The rules' rounding; `mode` (half up, or ceiling for the floor) for steps and cents. Ending .99
    always rounds up."""
    if rules.rounding == "ending_99":
        return (amount - NINETY_NINE).to_integral_value(rounding=ROUND_CEILING) + NINETY_NINE
    if rules.rounding == "step":
        return (amount / rules.step).to_integral_value(rounding=mode) * rules.step
    return amount.quantize(FOUR, rounding=mode)


def storefront_price(cost: Decimal, sku: str, category: str | None, rules: Rules) -> Decimal:
    """Markup, rounding and the margin floor (docs/pricing.md, "Storefront price")."""
    if sku in rules.skus:
        percent = rules.skus[sku]
    elif category is not None and category in rules.categories:
        percent = rules.categories[category]
    else:
        percent = rules.percent
    rounded = _round(cost * (1 + percent / 100), rules)
    floor = cost * (1 + rules.min_margin)
    return rounded if rounded >= floor else _round(floor, rules, ROUND_CEILING)


def expected_entry(sku: str, category: str | None, offers: Mapping[str, Offer], rules: Rules) -> Expected:
    """The storefront entry the rules give for one SKU from every supplier's current offer."""
    best = best_offer(offers, rules)
    if best is None:
        return UNAVAILABLE
    supplier, cost = best
    return Expected(True, storefront_price(cost, sku, category, rules), supplier, cost)


def shows(entry: Mapping[str, Any] | None, expected: Expected, rules: Rules) -> bool:
    """Whether a storefront entry (as pushed: price a decimal string) shows the expected state.

    An unavailable SKU keeps its last price: only `available: false` is compared.
    """
    if entry is None:
        return False
    if not expected.available:
        return entry.get("available") is False
    price = entry.get("price")
    return (
        entry.get("available") is True
        and price is not None
        and Decimal(str(price)) == expected.price
        and entry.get("supplier") == expected.supplier
        and entry.get("currency") == rules.store_currency
    )


def held_reason(new: Expected, last_pushed: Decimal | None, rules: Rules) -> str | None:
    """Why the per-SKU guard holds the change from the last pushed price to `new` (None: not held)."""
    if not new.available or new.price is None or last_pushed is None or new.price == last_pushed:
        return None
    if last_pushed <= 0:
        return "change from a non-positive price"
    if abs(new.price - last_pushed) * 100 > rules.max_change_pct * last_pushed:
        change = (new.price - last_pushed) / last_pushed * 100
        return f"change {change:.1f}% > {rules.max_change_pct}%"
    return None


def batch_held(
    expected: Mapping[str, Expected], last_pushed: Mapping[str, Decimal | None], rules: Rules
) -> set[str]:
    """SKUs whose change the batch rule holds: all changes of a batch where too many SKUs change.

    `expected` holds every priced (active) SKU; a SKU changes when it has a price and a last pushed
    price and they differ.
    """
    members: dict[str, list[str]] = {}
    for sku in expected:
        members.setdefault(batch_of(sku, rules.batches), []).append(sku)
    held: set[str] = set()
    for skus in members.values():
        changed = [
            sku
            for sku in skus
            if expected[sku].price is not None
            and last_pushed.get(sku) is not None
            and expected[sku].price != last_pushed[sku]
        ]
        if len(changed) > rules.max_batch_change_share * len(skus):
            held.update(changed)
    return held
