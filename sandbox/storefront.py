"""Sandbox storefront: paginated catalog and a price webhook that checks signatures (docs/architecture.md §7).

Faults (world.faults["storefront"]): `outage` (503 with Retry-After), `status` (answer every push
with this status), `fail_next` (the next N pushes get 503), `throttle_next` (the next N get 429),
`retry_after` (seconds, with 429/503), `lose_response_next` (apply the next N pushes, then answer 502
as if the response was lost), `down_after` (answer N more pushes, apply the next one and lose its
response, then stay in outage), `slow_next` + `latency_ms` (delay the next N pushes, then process
them), `reject_batches` / `reject_skus` (a push naming one of these batches or SKUs is answered 400),
`catalog_empty_page_at` (that catalog page answers no items, pagination goes on), `prices_empty_page_at`
(the same for the live prices listing), `wrong_total` (listings advertise this many more items).

Reads: `GET /catalog?page=&per_page=` (the catalog) and `GET /prices?page=&per_page=` (what the storefront
shows now, by SKU, with the version it last applied): `{"items", "page", "next_page", "total"}`.

`stray_409_next` (the next N pushes get a 409 that confirms no key, as a proxy or a version clash
would answer; nothing is applied).

Exactly-once evidence: a known Idempotency-Key is answered 409 before any validation, with the body
`{"status": "already_applied", "idempotency_key": "<key>"}`, and counted in `storefront.duplicates`;
an entry whose (sku, version) is not newer than the live one is counted in
`storefront.repeated_versions` (the same change applied twice under different keys).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.storefront_page import page_route
from sandbox.world import World

DEFAULT_SECRET = "sandbox-storefront-secret"
SIGNATURE_TOLERANCE_SECONDS = 300


def routes(world: World) -> list[Route]:
    """The storefront's routes, bound to a world."""

    def listing_page(request: Request, rows: list[dict[str, Any]], empty_fault: str) -> dict[str, Any]:
        """One page of a listing: {items, page, next_page, total}, with the listing faults applied."""
        faults = world.faults.get("storefront", {})
        page = max(1, int(request.query_params.get("page", "1")))
        per_page = max(1, min(int(request.query_params.get("per_page", "500")), 1000))
        start = (page - 1) * per_page
        items = rows[start : start + per_page] if faults.get(empty_fault) != page else []
        next_page = page + 1 if start + per_page < len(rows) else None
        total = len(rows) + int(faults.get("wrong_total", 0) or 0)
        return {"items": items, "page": page, "next_page": next_page, "total": total}

    async def catalog(request: Request) -> JSONResponse:
        rows = [{k: v for k, v in row.items() if k != "base_eur"} for row in world.catalog]
        world.counters["storefront.catalog_requests"] += 1
        return JSONResponse(listing_page(request, rows, "catalog_empty_page_at"))

    async def live_prices(request: Request) -> JSONResponse:
        """What the storefront shows now (webhook pushes), one row per SKU, sorted by SKU."""
        rows = [
            {
                name: entry.get(name)
                for name in ("sku", "price", "currency", "available", "supplier", "version")
            }
            for sku, entry in sorted(world.storefront_prices.items())
            if entry.get("via") != "shopify"
        ]
        world.counters["storefront.price_reads"] += 1
        return JSONResponse(listing_page(request, rows, "prices_empty_page_at"))

    def take(faults: dict[str, Any], name: str) -> bool:
        """Consume one of a next-N fault counter; True if it fired."""
        remaining = int(faults.get(name, 0))
        if remaining > 0:
            faults[name] = remaining - 1
            return True
        return False

    async def prices(request: Request) -> Response:
        world.counters["storefront.requests"] += 1
        body = await request.body()
        faults = world.faults.get("storefront", {})
        retry_after = str(faults.get("retry_after", 1))
        if take(faults, "slow_next"):
            await asyncio.sleep(float(faults.get("latency_ms", 500)) / 1000)
        if faults.get("outage"):
            return JSONResponse({"error": "down"}, status_code=503, headers={"Retry-After": retry_after})
        if take(faults, "fail_next"):
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": retry_after})
        if take(faults, "throttle_next"):
            world.counters["storefront.throttled"] += 1
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": retry_after})
        if "status" in faults:
            status = int(faults["status"])
            headers = {"Retry-After": retry_after} if status in (429, 503) else {}
            return JSONResponse({"error": f"forced {status}"}, status_code=status, headers=headers)
        if take(faults, "stray_409_next"):
            # A 409 that is not the storefront's "already applied" (a proxy, a version clash): nothing
            # applied, and the body confirms no key.
            world.counters["storefront.stray_409"] += 1
            return JSONResponse({"error": "conflict: resource version changed"}, status_code=409)
        problem = verify_signature(body, request.headers.get("X-Signature", ""), _secret())
        if problem:
            world.counters["storefront.bad_signatures"] += 1
            return JSONResponse({"error": problem}, status_code=401)
        key = request.headers.get("Idempotency-Key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key header is required"}, status_code=400)
        # A known key is answered before any validation, so a retry never sees a different verdict.
        if key in world.applied_keys:
            world.counters["storefront.duplicates"] += 1
            # The contract: a 409 names the key it applied earlier, so the client can tell it apart.
            return JSONResponse({"status": "already_applied", "idempotency_key": key}, status_code=409)
        try:
            payload: dict[str, Any] = json.loads(body)
            batch, entries = payload["batch"], payload["prices"]
            skus = {entry["sku"] for entry in entries}
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "body must be {batch, prices: [{sku, ...}]}"}, status_code=400)
        if batch in faults.get("reject_batches", []):
            world.counters["storefront.rejected"] += 1
            return JSONResponse({"error": f"batch {batch} rejected"}, status_code=400)
        bad = sorted(skus & set(faults.get("reject_skus", [])))
        if bad:
            world.counters["storefront.rejected"] += 1
            return JSONResponse({"error": f"unknown SKUs: {', '.join(bad[:5])}"}, status_code=400)
        for entry in entries:
            current = world.storefront_prices.get(entry["sku"])
            if current is not None and int(entry.get("version", 0)) <= int(current.get("version", 0)):
                # The same change arriving under another key: exactly-once was broken upstream.
                world.counters["storefront.repeated_versions"] += 1
            world.storefront_prices[entry["sku"]] = entry
        world.applied_keys[key] = len(entries)
        world.pushes.append({"key": key, "batch": batch, "prices": entries, "received_at": time.time()})
        world.counters["storefront.applied"] += len(entries)
        if "down_after" in faults:
            faults["down_after"] = int(faults["down_after"]) - 1
            if faults["down_after"] < 0:
                # Crashed while answering: this push was applied, its response is lost, and it stays down.
                faults["outage"] = True
                return JSONResponse({"error": "connection reset"}, status_code=502)
        if take(faults, "lose_response_next"):
            return JSONResponse({"error": "gateway lost the response"}, status_code=502)
        return JSONResponse({"status": "applied", "count": len(entries)})

    async def pushes(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "pushes": world.pushes,
                "prices": world.storefront_prices,
                "duplicates": world.counters["storefront.duplicates"],
                "bad_signatures": world.counters["storefront.bad_signatures"],
                "repeated_versions": world.counters["storefront.repeated_versions"],
            }
        )

    return [
        Route("/catalog", catalog, methods=["GET"]),
        Route("/prices", prices, methods=["POST"]),
        Route("/prices", live_prices, methods=["GET"]),
        Route("/_pushes", pushes, methods=["GET"]),
        page_route(world),
    ]


def _secret() -> str:
    return os.environ.get("STOREFRONT_WEBHOOK_SECRET") or DEFAULT_SECRET


def verify_signature(body: bytes, header: str, secret: str, now: float | None = None) -> str | None:
    """Check `t=<unix>,v1=<hex hmac>` over "<t>.<body>"; return the problem, or None if valid."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if "t" not in parts or "v1" not in parts:
        return "missing or malformed X-Signature"
    try:
        stamp = int(parts["t"])
    except ValueError:
        return "X-Signature timestamp is not an integer"
    if abs((now or time.time()) - stamp) > SIGNATURE_TOLERANCE_SECONDS:
        return "X-Signature timestamp outside tolerance"
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        return "X-Signature does not match"
    return None
