"""supplier_rate_limit: with the sandbox limiting alpha to R requests/s, the client's achieved rate and 429s.

The ratio is R / achieved requests per second (the limit is the baseline throughput), so 1.00 means
the client used the whole allowance; the target (<= 1.1: at least 0.9 of the allowance) also requires
zero 429 answers. For contrast the detail reports a bare httpx loop with no limiter against the same
limit (it collects 429s). `BENCH_BUSY_PROCESSES=N` runs N busy loops (bounded to the benchmark's
duration) beside it, to show the pacing holds on a loaded machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from bench._harness import line, scaled
from bench.supplier_fetch import API_KEY, SEED, alpha_entry, sandbox_server
from resources.config import RateLimitConfig, SupplierEntry, load_registry
from resources.suppliers import fetch_supplier_offers
from sandbox.world import World

NAME = "supplier_rate_limit"
TARGET = 1.1
RATE = 40  # requests per second the sandbox allows
SERVER_BURST = 4
CLIENT_BURST = 2
REQUESTS = 200
BATCH_SIZE = 10
REPEATS = 5
BUSY_SECONDS_MAX = 300  # a busy loop ends by itself even if the benchmark is killed
CATALOG = 4000


def _control(url: str, faults: dict | None = None, reset: bool = False) -> None:
    if reset:
        httpx.post(f"{url}/_control/reset", timeout=10).raise_for_status()
    if faults is not None:
        httpx.post(f"{url}/_control/faults", json=faults, timeout=10).raise_for_status()


def _limited_entry(url: str) -> SupplierEntry:
    # A client burst below the server's leaves room for network jitter, and lets a late request catch up.
    entry = alpha_entry(url)
    return SupplierEntry.model_validate(
        {
            **entry.model_dump(),
            "rate_limit": RateLimitConfig(requests_per_second=RATE, burst=CLIENT_BURST, max_in_flight=4),
            "request": {**entry.request, "batch_size": BATCH_SIZE},
        }
    )


async def _bare_unlimited(url: str, chunks: list[list[str]]) -> int:
    """A plain httpx loop, 4 in flight, no limiter: how many 429s it collects."""
    slots = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=f"{url}/suppliers/alpha", timeout=30) as client:

        async def one(chunk: list[str]) -> int:
            async with slots:
                response = await client.get(
                    "/v1/offers", params={"skus": ",".join(chunk)}, headers={"X-Api-Key": API_KEY}
                )
            return int(response.status_code == 429)

        return sum(await asyncio.gather(*(one(chunk) for chunk in chunks)))


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each, stopped when the block ends (or after 5 minutes)."""
    loop = f"import time\nend = time.monotonic() + {BUSY_SECONDS_MAX}\nwhile time.monotonic() < end: pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(timeout=10)


def run() -> str:
    """Measure the achieved request rate against the sandbox limit; return the result line."""
    busy = int(os.environ.get("BENCH_BUSY_PROCESSES", "0"))
    with busy_processes(busy):
        return _measure(busy)


def _measure(busy: int) -> str:
    requests = scaled(REQUESTS, minimum=2 * RATE)
    skus = [row["sku"] for row in World(seed=SEED, catalog_size=CATALOG).catalog]
    wanted = [skus[i % len(skus)] for i in range(requests * BATCH_SIZE)]
    wanted = list(dict.fromkeys(wanted))[: requests * BATCH_SIZE]
    currencies = set(load_registry().fx_rates())
    rates: list[float] = []
    throttled = 0
    with sandbox_server(CATALOG) as url:
        entry = _limited_entry(url)
        # Warm-up: the sandbox builds its offers on first use, which would stall (then bunch) requests.
        asyncio.run(fetch_supplier_offers(entry, wanted[:BATCH_SIZE], known_currencies=currencies))
        for _ in range(REPEATS):
            _control(
                url, reset=True, faults={"alpha": {"rate_limit_rps": RATE, "rate_limit_burst": SERVER_BURST}}
            )
            started = time.perf_counter()
            result = asyncio.run(fetch_supplier_offers(entry, wanted, known_currencies=currencies))
            elapsed = time.perf_counter() - started
            counters = httpx.get(f"{url}/_control/counters", timeout=10).json()
            throttled += counters.get("alpha.429", 0)
            rates.append(result.stats.requests / elapsed)
        _control(
            url, reset=True, faults={"alpha": {"rate_limit_rps": RATE, "rate_limit_burst": SERVER_BURST}}
        )
        chunks = [wanted[i : i + BATCH_SIZE] for i in range(0, len(wanted), BATCH_SIZE)]
        bare_429s = asyncio.run(_bare_unlimited(url, chunks))
    achieved = statistics.median(rates)
    # Any 429 misses the target whatever the rate.
    ratio = float("inf") if throttled else RATE / achieved
    detail = (
        f"limit {RATE} req/s, median achieved {achieved:.1f} req/s over {REPEATS} runs of "
        f"{len(wanted) // BATCH_SIZE} requests ({min(rates):.1f}..{max(rates):.1f}), 429s {throttled}"
        f"{f', with {busy} busy processes' if busy else ''}; bare loop without limiter: {bare_429s} 429s"
    )
    return line(NAME, ratio, TARGET, detail)


if __name__ == "__main__":
    print(run())
