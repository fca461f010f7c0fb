"""supplier_fetch: 100k SKUs from the sandbox batch supplier, the asset's fetch path vs a bare httpx loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl

from bench._harness import alternate, line, scaled
from resources.config import RateLimitConfig, SupplierEntry, load_registry
from resources.schemas import MONEY
from resources.suppliers import fetch_supplier_offers
from sandbox import server
from sandbox.world import World

NAME = "supplier_fetch"
TARGET = 1.25
SKUS = 100_000
SEED = 7
BATCH_SIZE = 500
IN_FLIGHT = 4
API_KEY = "sandbox-alpha-key"
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def sandbox_server(skus: int, seed: int = SEED) -> Iterator[str]:
    """Run `python -m sandbox` on a free 127.0.0.1 port for the benchmark; yields its base URL.

    Also sets the sandbox's demo API key in this process's environment unless one is set.
    """
    os.environ.setdefault("ALPHA_API_KEY", API_KEY)
    with server.running(seed=seed, skus=skus) as url:
        yield url


def alpha_entry(url: str) -> SupplierEntry:
    """The registry's alpha entry pointed at the benchmark sandbox, client throttling off."""
    base = load_registry().by_id["alpha"]
    return SupplierEntry.model_validate(
        {
            **base.model_dump(),
            "base_url": f"{url}/suppliers/alpha",
            "rate_limit": RateLimitConfig(requests_per_second=100_000, burst=1000, max_in_flight=IN_FLIGHT),
            "request": {**base.request, "method": "GET", "batch_size": BATCH_SIZE},
        }
    )


async def bare_fetch(url: str, skus: list[str]) -> pl.DataFrame:
    """The baseline: a plain httpx.AsyncClient loop over the same endpoint, same batches and parallelism."""
    slots = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=f"{url}/suppliers/alpha", limits=limits, timeout=30) as client:

        async def one(chunk: list[str]) -> list[dict]:
            async with slots:
                response = await client.get(
                    "/v1/offers", params={"skus": ",".join(chunk)}, headers={"X-Api-Key": API_KEY}
                )
            response.raise_for_status()
            return response.json()["items"]

        chunks = [skus[i : i + BATCH_SIZE] for i in range(0, len(skus), BATCH_SIZE)]
        pages = await asyncio.gather(*(one(chunk) for chunk in chunks))
    records = [record for page in pages for record in page]
    return pl.DataFrame(
        {
            "sku": [r["sku"] for r in records],
            "price": [r["pricing"]["amount"] for r in records],
            "currency": [r["pricing"]["currency"] for r in records],
            "stock": [r["inventory"]["available"] for r in records],
        },
        schema={"sku": pl.String, "price": pl.String, "currency": pl.String, "stock": pl.Int64},
    ).with_columns(pl.col("price").cast(MONEY))


def run() -> str:
    """Time the project's fetch path (fetch, map, validate) against the bare loop; return the result line."""
    n = scaled(SKUS, minimum=1000)
    skus = [row["sku"] for row in World(seed=SEED, catalog_size=n).catalog]
    currencies = set(load_registry().fx_rates())
    with sandbox_server(n) as url:
        entry = alpha_entry(url)
        rows: dict[str, int] = {}

        def project() -> None:
            result = asyncio.run(fetch_supplier_offers(entry, skus, known_currencies=currencies))
            rows["project"] = result.offers.height

        def baseline() -> None:
            rows["baseline"] = asyncio.run(bare_fetch(url, skus)).height

        timing = alternate(project, baseline, repeats=5, warmup=1)
    if rows["project"] != rows["baseline"]:
        raise RuntimeError(f"project kept {rows['project']} offers, baseline {rows['baseline']}")
    detail = (
        f"{n} SKUs, {rows['project']} offers, {len(skus) // BATCH_SIZE} requests x {IN_FLIGHT} in flight: "
        f"project median {timing.project:.3f}s, bare httpx loop median {timing.baseline:.3f}s"
    )
    return line(NAME, timing.ratio, TARGET, detail)


if __name__ == "__main__":
    print(run())
