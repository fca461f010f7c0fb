"""storefront_push: 10k changed prices through the sync's code path vs bare httpx posts of the same batches.

Both sides post to the same sandbox storefront (a real uvicorn process on 127.0.0.1), in the same
run, alternating. The project side is `sync_batch`: read the journal, diff against the ledger, build
entries, write-ahead journal, sign and post each chunk, fold acknowledgements into the ledger. The
baseline builds the same JSON bodies, signs them and posts them with one httpx client. Every call
carries a new version so no push is a 409 duplicate. `BENCH_SCALE` shrinks the 10k.
"""

import hashlib
import hmac
import json
import math
import random
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from bench._harness import alternate, line, scaled
from pricing_assets.logic.ledger import SYNC_SCHEMA
from pricing_assets.storefront_sync import sync_batch
from resources.push_state import PushJournal
from resources.schemas import MONEY, STOREFRONT_PRICES_SCHEMA
from resources.storefront import PushStats, Storefront
from resources.warehouse import Warehouse
from sandbox import server

NAME = "storefront_push"
TARGET = 1.2
PRICES = 10_000
BATCH_SIZE = 500
SECRET = "bench-storefront-secret"
ROOT = Path(__file__).resolve().parent.parent


def start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    """The sandbox on a free 127.0.0.1 port with the benchmark's webhook secret."""
    return server.start(skus=10, env={"STOREFRONT_WEBHOOK_SECRET": SECRET}, quiet=True)


def make_targets(n: int) -> pl.DataFrame:
    """Seeded storefront_prices rows for n SKUs."""
    rng = random.Random(6)
    suppliers = ["alpha", "beta", "gamma", "delta"]
    return pl.DataFrame(
        {
            "sku": [f"BENCH-{i:06d}" for i in range(n)],
            "available": [True] * n,
            "supplier": [suppliers[rng.randrange(4)] for _ in range(n)],
            "cost": [Decimal(rng.randrange(100, 10000)) / 100 for _ in range(n)],
            "price": [Decimal(rng.randrange(199, 19999)) / 100 for _ in range(n)],
            "currency": ["EUR"] * n,
            "last_pushed_price": [None] * n,
            "change_pct": [None] * n,
            "held": [False] * n,
            "hold_reason": [None] * n,
        },
        schema=STOREFRONT_PRICES_SCHEMA,
    )


def make_ledger(targets: pl.DataFrame, version: int) -> pl.DataFrame:
    """A ledger where every SKU was acknowledged at another price: all of them change."""
    acknowledged = targets.select(
        "sku",
        (pl.col("price") + Decimal("1")).cast(MONEY).alias("price"),
        "currency",
        "available",
        "supplier",
        pl.lit(version, dtype=pl.Int64).alias("version"),
    )
    missing = [
        pl.lit(None, dtype=t).alias(n) for n, t in SYNC_SCHEMA.items() if n not in acknowledged.columns
    ]
    return acknowledged.with_columns(missing).select(list(SYNC_SCHEMA))


def run() -> str:
    """Run the benchmark and return its result line."""
    n = scaled(PRICES, minimum=BATCH_SIZE)
    expected_requests = math.ceil(n / BATCH_SIZE)
    targets = make_targets(n)
    base_entries = targets.select(
        "sku", pl.col("price").cast(pl.String), "currency", "available", "supplier"
    ).to_dicts()
    process, url = start_sandbox()
    state: dict[str, Any] = {"version": 0, "requests": []}
    try:
        storefront = Storefront(url=f"{url}/storefront", webhook_secret=SECRET)
        warehouse = Warehouse(base_dir=tempfile.mkdtemp(prefix="bench-storefront-"))
        journal = PushJournal(warehouse)
        # Ledgers are inputs, made before timing: each call starts one version above the last.
        ledgers = [make_ledger(targets, 10 * (i + 1)) for i in range(20)]

        def project() -> None:
            stats = PushStats()
            with storefront.open_pusher() as pusher:
                result = sync_batch(
                    "batch-000",
                    targets,
                    ledgers.pop(0),
                    journal=journal,
                    pusher=pusher,
                    push_batch_size=BATCH_SIZE,
                    dry_run=False,
                    stats=stats,
                    now=datetime.now(UTC),
                )
            if result.counts["pushed"] != n:
                raise RuntimeError(f"project pushed {result.counts['pushed']} of {n}: {result.errors[:1]}")
            state["requests"].append(stats.requests)

        def baseline() -> None:
            state["version"] += 1
            version = 1_000_000 + state["version"]
            entries = [{**entry, "version": version} for entry in base_entries]
            with httpx.Client(base_url=f"{url}/storefront", timeout=10) as client:
                for start in range(0, n, BATCH_SIZE):
                    body = json.dumps(
                        {"batch": "batch-000", "prices": entries[start : start + BATCH_SIZE]}
                    ).encode()
                    stamp = int(time.time())
                    digest = hmac.new(
                        SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256
                    ).hexdigest()
                    headers = {
                        "Content-Type": "application/json",
                        "Idempotency-Key": hashlib.sha256(body).hexdigest()[:40],
                        "X-Signature": f"t={stamp},v1={digest}",
                    }
                    client.post("/prices", content=body, headers=headers).raise_for_status()

        timing = alternate(project, baseline, repeats=9, warmup=1)
    finally:
        server.stop(process)
    requests = set(state["requests"])
    counted = f"{requests.pop()} requests" if len(requests) == 1 else f"requests varied {sorted(requests)}"
    check = "ok" if state["requests"] and set(state["requests"]) == {expected_requests} else "MISMATCH"
    detail = (
        f"project {timing.project * 1000:.0f} ms vs bare httpx {timing.baseline * 1000:.0f} ms (medians) "
        f"for {n} changed prices; {counted} = ceil({n}/{BATCH_SIZE}) = {expected_requests}: {check}"
    )
    return line(NAME, timing.ratio, TARGET, detail)


if __name__ == "__main__":
    print(run())
