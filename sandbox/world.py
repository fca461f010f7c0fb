"""The sandbox's deterministic world: catalog, supplier offers, fault switches and counters."""

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

    def rng(self, name: str) -> random.Random:
        """A random generator seeded by the world seed, the generation and a name."""
        return random.Random(f"{self.seed}:{self.generation}:{name}")

    @property
    def catalog(self) -> list[dict[str, Any]]:
        """The storefront's catalog: SKUs with title, category, active flag and Shopify ids."""
        return _catalog(self.seed, self.catalog_size)

    def offers(self, supplier_id: str) -> dict[str, SandboxOffer]:
        """A supplier's offers keyed by SKU: a seeded 70-90 % subset of the catalog."""
        return _offers(self.seed, self.catalog_size, self.generation, supplier_id)

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


@cache
def _offers(seed: int, size: int, generation: int, supplier_id: str) -> dict[str, SandboxOffer]:
    currency = SUPPLIERS.get(supplier_id, "EUR")
    rng = random.Random(f"{seed}:{generation}:offers:{supplier_id}")
    share = 0.7 + 0.2 * random.Random(f"{seed}:share:{supplier_id}").random()
    offers: dict[str, SandboxOffer] = {}
    for row in _catalog(seed, size):
        if rng.random() > share:
            continue
        factor = Decimal(rng.randrange(85, 125)) / 100
        price = (row["base_eur"] * factor / _EUR_PER[currency]).quantize(Decimal("0.01"))
        roll = rng.random()
        stock = 0 if roll < 0.08 else (None if roll < 0.15 else rng.randrange(1, 60))
        offers[row["sku"]] = SandboxOffer(price=price, currency=currency, stock=stock)
    return offers
