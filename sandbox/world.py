"""The sandbox's deterministic world: catalog, supplier offers, fault switches and counters.

Offers are a pure function of (seed, catalog size, generation, supplier): bumping `generation` moves
every supplier's prices at once (`POST /_control/market`). On top of that, a seeded **price stream**
(`stream_step`) moves a share of one or more REST suppliers' SKUs at a time, as real suppliers do, and
logs every change with its time (`stream_log`), so a soak can say when a change reached the storefront.
The same seed and the same calls give the same changes; a new generation starts from a clean market.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

CATEGORIES = ("games", "software", "gift-cards", "subscriptions", "ebooks")
SUPPLIERS = {"alpha": "EUR", "beta": "USD", "gamma": "GBP", "delta": "EUR"}
# Rough EUR value of one unit of each currency, so suppliers' prices are comparable.
_EUR_PER = {"EUR": Decimal(1), "USD": Decimal("0.92"), "GBP": Decimal("1.17")}
# The stream moves suppliers served live over REST. A file supplier (delta, on the CDN) publishes a new
# file on its own schedule, which the project fetches every 30 minutes; its market moves by generation.
STREAM_SUPPLIERS = ("alpha", "beta", "gamma")


@dataclass(frozen=True)
class SandboxOffer:
    """What one supplier says about one SKU."""

    price: Decimal
    currency: str
    stock: int | None


@dataclass
class World:
    """Everything the sandbox serves, derived from a seed so every run sees the same data."""

    seed: int = 7
    catalog_size: int = 2000
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    # Bumped to change every supplier's prices, as if the market moved.
    generation: int = 0
    # Storefront side: every push received, idempotency keys applied, and the live prices.
    pushes: list[dict[str, Any]] = field(default_factory=list)
    applied_keys: dict[str, int] = field(default_factory=dict)
    storefront_prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Alert webhook side (sandbox/alerts.py): every alert received, in order.
    alerts: list[dict[str, Any]] = field(default_factory=list)
    # The price stream: every change made, in order, and the offers it replaced (this generation only).
    stream_log: list[dict[str, Any]] = field(default_factory=list)
    stream_steps: int = 0
    _stream_offers: dict[str, dict[str, SandboxOffer]] = field(default_factory=dict, repr=False)
    _stream_generation: int = field(default=0, repr=False)
    _merged: dict[str, tuple[int, dict[str, SandboxOffer]]] = field(default_factory=dict, repr=False)

    def rng(self, name: str) -> random.Random:
        """A random generator seeded by the world seed, the generation and a name."""
        return random.Random(f"{self.seed}:{self.generation}:{name}")

    @property
    def catalog(self) -> list[dict[str, Any]]:
        """The storefront's catalog: SKUs with title, category, active flag and Shopify ids."""
        return _catalog(self.seed, self.catalog_size)

    def offers(self, supplier_id: str) -> dict[str, SandboxOffer]:
        """A supplier's offers keyed by SKU: a seeded 70-90 % subset of the catalog, as the stream left it."""
        base = _offers(self.seed, self.catalog_size, self.generation, supplier_id)
        if self._stream_generation != self.generation:
            return base  # the market moved since the stream's changes: they belonged to the old one
        changed = self._stream_offers.get(supplier_id)
        if not changed:
            return base
        cached = self._merged.get(supplier_id)
        if cached is None or cached[0] != self.stream_steps:
            cached = (self.stream_steps, {**base, **changed})
            self._merged[supplier_id] = cached
        return cached[1]

    def stream_step(
        self, *, share: float = 0.05, suppliers: tuple[str, ...] = STREAM_SUPPLIERS, at: float = 0.0
    ) -> list[dict[str, Any]]:
        """Move a seeded `share` of each supplier's offers (new price and stock); log and return the changes.

        Which SKUs move and their new values depend only on the seed, the generation and the step number;
        `at` (unix seconds) is recorded with each change.
        """
        check_stream_settings(share, suppliers)
        if self._stream_generation != self.generation:
            self._stream_offers.clear()
            self._merged.clear()
            self._stream_generation = self.generation
        rng = random.Random(f"{self.seed}:{self.generation}:stream:{self.stream_steps}")
        rows = _catalog_index(self.seed, self.catalog_size)
        changes: list[dict[str, Any]] = []
        for supplier_id in suppliers:
            current = self.offers(supplier_id)
            skus = sorted(current)
            chosen = sorted(rng.sample(skus, max(1, round(len(skus) * share)))) if skus else []
            moved = self._stream_offers.setdefault(supplier_id, {})
            for sku in chosen:
                offer = _draw_offer(rng, rows[sku]["base_eur"], current[sku].currency)
                moved[sku] = offer
                change = {
                    "seq": len(self.stream_log),
                    "step": self.stream_steps,
                    "at": at,
                    "supplier": supplier_id,
                    "sku": sku,
                    "price": str(offer.price),
                    "currency": offer.currency,
                    "stock": offer.stock,
                }
                self.stream_log.append(change)
                changes.append(change)
        self.stream_steps += 1
        return changes

    def reset_stream(self) -> None:
        """Forget the stream's changes: every supplier is back to its generation's offers."""
        self.stream_log.clear()
        self.stream_steps = 0
        self._stream_offers.clear()
        self._merged.clear()

    def fault(self, target: str, key: str, default: Any = None) -> Any:
        """One fault setting for a target, or the default when unset."""
        return self.faults.get(target, {}).get(key, default)

    def set_faults(self, updates: dict[str, dict[str, Any] | None]) -> None:
        """Merge fault settings per target; None clears a target."""
        for target, settings in updates.items():
            if settings is None:
                self.faults.pop(target, None)
            else:
                self.faults.setdefault(target, {}).update(settings)


@cache
def _catalog(seed: int, size: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:catalog")
    rows = []
    for i in range(size):
        sku = f"SKU-{i:06d}"
        rows.append(
            {
                "sku": sku,
                "title": f"Digital item {i}",
                "category": CATEGORIES[rng.randrange(len(CATEGORIES))],
                # A few retired SKUs that must not be priced.
                "active": rng.random() > 0.02,
                "product_id": f"gid://shopify/Product/{1000 + i // 3}",
                "variant_id": f"gid://shopify/ProductVariant/{500000 + i}",
                "base_eur": Decimal(rng.randrange(199, 19999)) / 100,
            }
        )
    return rows


def check_stream_settings(share: float, suppliers: tuple[str, ...]) -> None:
    """Raise ValueError naming the problem when the stream cannot move these suppliers by this share."""
    unknown = [s for s in suppliers if s not in STREAM_SUPPLIERS]
    if unknown:
        raise ValueError(
            f"the price stream moves REST suppliers only ({', '.join(STREAM_SUPPLIERS)}), "
            f"not {', '.join(unknown)}"
        )
    if not 0 < share <= 1:
        raise ValueError(f"stream share must be in (0, 1], got {share}")


@cache
def _catalog_index(seed: int, size: int) -> dict[str, dict[str, Any]]:
    return {row["sku"]: row for row in _catalog(seed, size)}


def _draw_offer(rng: random.Random, base_eur: Decimal, currency: str) -> SandboxOffer:
    """One offer around the SKU's base price: 85-124 % of it, with a seeded stock (0, unknown or 1-59)."""
    factor = Decimal(rng.randrange(85, 125)) / 100
    price = (base_eur * factor / _EUR_PER[currency]).quantize(Decimal("0.01"))
    roll = rng.random()
    stock = 0 if roll < 0.08 else (None if roll < 0.15 else rng.randrange(1, 60))
    return SandboxOffer(price=price, currency=currency, stock=stock)


@cache
def _offers(seed: int, size: int, generation: int, supplier_id: str) -> dict[str, SandboxOffer]:
    currency = SUPPLIERS.get(supplier_id, "EUR")
    rng = random.Random(f"{seed}:{generation}:offers:{supplier_id}")
    share = 0.7 + 0.2 * random.Random(f"{seed}:share:{supplier_id}").random()
    offers: dict[str, SandboxOffer] = {}
    for row in _catalog(seed, size):
        if rng.random() > share:
            continue
        offers[row["sku"]] = _draw_offer(rng, row["base_eur"], currency)
    return offers
