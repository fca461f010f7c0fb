"""The soak's independent expected-price computation: the documented rules, and agreement with the project."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
import yaml

from bench._soak_expect import (
    UNAVAILABLE,
    Expected,
    Offer,
    Rules,
    batch_held,
    batch_of,
    best_offer,
    expected_entry,
    held_reason,
    load_rules,
    shows,
    storefront_price,
)
from pricing_assets.logic.best_offers import select_best_offers
from pricing_assets.logic.markup import apply_markup
from resources.config import MarkupConfig, load_registry
from resources.schemas import CATALOG_SCHEMA, OFFERS_SCHEMA

D = Decimal
REGISTRY = {
    "store_currency": "EUR",
    "catalog_batches": 16,
    "fx": {"USD": "0.92", "GBP": "1.17"},
    "suppliers": [
        {"id": "alpha", "priority": 10},
        {"id": "beta", "priority": 20},
        {"id": "gamma", "priority": 5},
    ],
}


def rules(**markup: object) -> Rules:
    return load_rules(REGISTRY, {"markup": markup} if markup else {})


def test_rules_come_from_the_registry_and_service_config():
    loaded = load_rules(
        REGISTRY,
        {
            "markup": {"percent": "10", "rounding": {"mode": "step", "step": "0.25"}},
            "guard": {"max_change_pct": "20"},
        },
    )
    assert loaded.supplier_order == ("gamma", "alpha", "beta")  # priority, then position
    assert loaded.fx == {"EUR": D(1), "USD": D("0.92"), "GBP": D("1.17")}
    assert (loaded.percent, loaded.rounding, loaded.step, loaded.max_change_pct) == (
        D(10),
        "step",
        D("0.25"),
        D(20),
    )
    assert (loaded.min_margin, loaded.max_batch_change_share) == (D("0.05"), D("0.5"))


def test_best_offer_candidates_fx_rounding_and_ties():
    r = rules()
    assert best_offer({"alpha": Offer(D("10.00"), "EUR", 3), "beta": Offer(D("10.00"), "USD", None)}, r) == (
        "beta",
        D("9.2000"),
    )
    # Out of stock, unknown currency and non-positive prices are not candidates; unknown stock is.
    offers = {
        "alpha": Offer(D("1.00"), "EUR", 0),
        "beta": Offer(D("1.00"), "XXX", 5),
        "gamma": Offer(D("0"), "EUR", 5),
    }
    assert best_offer(offers, r) is None
    assert best_offer({"alpha": Offer(D("4.00"), "EUR", None)}, r) == ("alpha", D("4.0000"))
    # Costs equal at 4 decimals (half-even) tie; priority decides (gamma before alpha).
    tie = {"alpha": Offer(D("1.17"), "EUR", 1), "gamma": Offer(D("1.00"), "GBP", 1)}
    assert best_offer(tie, r) == ("gamma", D("1.1700"))
    assert best_offer({"beta": Offer(D("0.00005"), "EUR", 1)}, r) == ("beta", D("0.0000"))  # half-even


@pytest.mark.parametrize(
    ("cost", "mode", "step", "percent", "expected"),
    [
        ("10", "none", "0.05", "15", "11.5000"),
        ("0.0030", "none", "0.05", "15", "0.0035"),  # 0.00345 half-up
        ("10", "ending_99", "0.05", "15", "11.99"),
        ("10.4252", "ending_99", "0.05", "15", "11.99"),
        ("0.1", "ending_99", "0.05", "15", "0.99"),
        ("10", "step", "0.25", "15", "11.50"),
        ("10.1", "step", "0.25", "15", "11.50"),  # 11.615 is nearer 11.50
        ("10", "step", "1", "15", "12"),  # a half rounds up
        # The floor (cost x 1.05): -10 % gives 9.00, below 10.50, so the floor rounded up wins.
        ("10", "none", "0.05", "-10", "10.5000"),
        ("10", "ending_99", "0.05", "-10", "10.99"),
        ("10", "step", "0.25", "-10", "10.50"),
    ],
)
def test_storefront_price_follows_the_documented_examples(cost, mode, step, percent, expected):
    r = rules(percent=percent, rounding={"mode": mode, "step": step})
    assert storefront_price(D(cost), "SKU-1", "games", r) == D(expected)


def test_markup_percent_sku_then_category_then_global():
    r = rules(percent="10", categories={"games": "20"}, skus={"SKU-9": "50"})
    assert storefront_price(D(10), "SKU-9", "games", r) == D("15.0000")
    assert storefront_price(D(10), "SKU-1", "games", r) == D("12.0000")
    assert storefront_price(D(10), "SKU-1", "ebooks", r) == D("11.0000")


def test_entries_shown_and_guard():
    r = rules()
    entry = expected_entry("SKU-1", None, {"alpha": Offer(D(10), "EUR", 2)}, r)
    assert entry == Expected(True, D("11.5000"), "alpha", D("10.0000"))
    pushed = {"sku": "SKU-1", "price": "11.5000", "currency": "EUR", "available": True, "supplier": "alpha"}
    assert shows(pushed, entry, r)
    assert not shows({**pushed, "supplier": "beta"}, entry, r) and not shows(None, entry, r)
    assert shows({**pushed, "available": False, "price": "3"}, UNAVAILABLE, r)  # the old price stays
    assert held_reason(entry, D("8.84"), r) == "change 30.1% > 30%"
    assert held_reason(entry, D("8.85"), r) is None  # 29.9 %
    assert held_reason(entry, D("0"), r) == "change from a non-positive price"
    assert held_reason(entry, None, r) is None and held_reason(UNAVAILABLE, D("1"), r) is None


def test_batch_rule_holds_every_change_of_a_batch_that_changes_too_much():
    r = rules()
    skus = [f"S{i}" for i in range(400)]
    batch = batch_of(skus[0], 16)
    mates = [sku for sku in skus if batch_of(sku, 16) == batch][:4]
    expected = {sku: Expected(True, D(2), "alpha") for sku in mates}
    assert batch_held(expected, dict.fromkeys(mates[:2], D(1)), r) == set()  # 2 of 4: not more than half
    assert batch_held(expected, dict.fromkeys(mates[:3], D(1)), r) == set(mates[:3])


def test_batch_of_matches_the_documented_golden_values():
    assert batch_of("SKU-000001", 16) == "batch-001"
    assert batch_of("A", 16) == "batch-008"
    assert batch_of("sku-é-ü", 16) == "batch-009"
    assert batch_of("A", 1000) == "batch-720"


@pytest.mark.parametrize("mode", ["none", "ending_99", "step"])
def test_agrees_with_the_project_on_random_offers(mode):
    """The harness and pricing_assets.logic, written separately, give the same price for every SKU."""
    registry = load_registry()
    config = {
        "markup": {
            "percent": "15",
            "categories": {"games": "20", "gift-cards": "-10"},
            "rounding": {"mode": mode, "step": "0.25"},
            "min_margin": "0.05",
        }
    }
    raw = yaml.safe_load(Path(registry.source).read_text())
    independent = load_rules(raw, config)
    rng = random.Random(f"soak-expect-{mode}")
    now = datetime.now(UTC)
    catalog, offers, by_sku = [], [], {}
    for i in range(600):
        sku = f"SKU-{i:06d}"
        category = rng.choice(["games", "software", "gift-cards", None])
        catalog.append({"sku": sku, "category": category, "active": True})
        by_sku[sku] = {}
        for supplier in ("alpha", "beta", "gamma", "delta"):
            if rng.random() < 0.25:
                continue
            currency = rng.choice(["EUR", "USD", "GBP", "EUR", "JPY"])
            price = D(rng.randrange(1, 30000)) / 100
            if rng.random() < 0.1:
                price = D(rng.choice(["11.70", "10.00", "9.2000"]))  # provoke equal costs
            stock = rng.choice([None, 0, 1, 7])
            offers.append(
                {
                    "sku": sku,
                    "supplier": supplier,
                    "price": price,
                    "currency": currency,
                    "stock": stock,
                    "in_stock": stock is None or stock > 0,
                    "fetched_at": now,
                }
            )
            by_sku[sku][supplier] = Offer(price, currency, stock)
    catalog_frame = pl.DataFrame(
        catalog, schema={k: CATALOG_SCHEMA[k] for k in ("sku", "category", "active")}
    )
    best = select_best_offers(
        catalog_frame,
        pl.DataFrame(offers, schema=OFFERS_SCHEMA),
        supplier_order=registry.order,
        enabled=registry.order,
        fx=registry.fx_rates(),
        now=now,
        staleness_ttl=timedelta(hours=1),
    )
    priced = apply_markup(best, MarkupConfig.model_validate(config["markup"]))
    project = {row["sku"]: row for row in priced.iter_rows(named=True)}
    disagreements = []
    for row in catalog:
        mine = expected_entry(row["sku"], row["category"], by_sku[row["sku"]], independent)
        theirs = project[row["sku"]]
        got = (bool(theirs["available"]), theirs["supplier"], theirs["price"])
        want = (mine.available, mine.supplier, mine.price)
        if got[0] != want[0] or (want[0] and (got[1] != want[1] or D(str(got[2])) != want[2])):
            disagreements.append((row["sku"], got, want))
    assert disagreements == []
    assert sum(1 for row in project.values() if row["available"]) > 400
