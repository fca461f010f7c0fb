"""Fixtures for supplier feed tests: the packaged registry tuned for fast retries, and a fetch helper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resources.config import RateLimitConfig, Registry, RetryConfig, SupplierEntry, load_registry
from resources.suppliers import FetchResult, clear_token_cache, fetch_supplier_offers
from sandbox.world import World

# The session sandbox in tests/conftest.py runs this world.
SANDBOX_WORLD = World(seed=7, catalog_size=400)
FAST_RETRY = RetryConfig(max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
FAST_LIMIT = RateLimitConfig(requests_per_second=1000, burst=100, max_in_flight=8)


@pytest.fixture(autouse=True)
def _fresh_tokens() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The packaged supplier registry."""
    return load_registry()


@pytest.fixture
def entry(registry: Registry) -> Callable[..., SupplierEntry]:
    """A registry entry with fast retries and no client throttling, plus any overrides (request merged)."""

    def make(supplier_id: str, *, request: dict[str, Any] | None = None, **updates: Any) -> SupplierEntry:
        base = registry.by_id[supplier_id]
        changes: dict[str, Any] = {"retry": FAST_RETRY, "rate_limit": FAST_LIMIT, "timeout_seconds": 2.0}
        changes |= updates
        if request:
            changes["request"] = {**base.request, **request}
        return SupplierEntry.model_validate({**base.model_dump(), **changes})

    return make


@pytest.fixture
def fetch(registry: Registry) -> Callable[..., FetchResult]:
    """Fetch offers from the sandbox for an entry (all catalog SKUs unless given)."""

    def run(entry: SupplierEntry, skus: list[str] | None = None) -> FetchResult:
        wanted = skus if skus is not None else [row["sku"] for row in SANDBOX_WORLD.catalog]
        return asyncio.run(fetch_supplier_offers(entry, wanted, known_currencies=set(registry.fx_rates())))

    return run
