"""Fixtures for supplier feed tests: the packaged registry tuned for fast retries, and a fetch helper; the
sandbox world's catalog and a fast registry file for tests that materialize the supplier assets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from pricing_assets.logic.batching import assign_batches
from resources.config import RateLimitConfig, Registry, RetryConfig, SupplierEntry, load_registry
from resources.schemas import CATALOG_SCHEMA
from resources.suppliers import FetchResult, clear_token_cache, fetch_supplier_offers
from sandbox.world import World

# The session sandbox in tests/conftest.py runs this world.
SANDBOX_WORLD = World(seed=7, catalog_size=400)
FAST_RETRY = RetryConfig(max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
FAST_LIMIT = RateLimitConfig(requests_per_second=1000, burst=100, max_in_flight=8)


def world_catalog(batches: int) -> pl.DataFrame:
    """The sandbox world's catalog in `batches` catalog batches (what the catalog asset would hold)."""
    rows = [{name: row[name] for name in CATALOG_SCHEMA} for row in SANDBOX_WORLD.catalog]
    return assign_batches(pl.DataFrame(rows, schema=CATALOG_SCHEMA), batches)


def write_registry_file(folder: Path, batches: int) -> Path:
    """The packaged registry's REST suppliers with fast retries over `batches` catalog batches, as a YAML
    file in `folder`."""
    raw = load_registry().model_dump(mode="json", exclude={"source"})
    raw["catalog_batches"] = batches
    raw["suppliers"] = [
        {**entry, "retry": FAST_RETRY.model_dump(), "rate_limit": FAST_LIMIT.model_dump()}
        for entry in raw["suppliers"]
        if entry["kind"] != "cdn_file"
    ]
    path = folder / "suppliers.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


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

    def run(entry: SupplierEntry, skus: list[str] | pl.DataFrame | None = None) -> FetchResult:
        wanted = skus if skus is not None else [row["sku"] for row in SANDBOX_WORLD.catalog]
        return asyncio.run(fetch_supplier_offers(entry, wanted, known_currencies=set(registry.fx_rates())))

    return run
