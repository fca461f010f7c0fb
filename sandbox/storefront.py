"""Sandbox storefront: paginated catalog, and a price webhook that verifies signatures (DESIGN §7).

Faults (world.faults["storefront"]): `outage` (503 with Retry-After), `status` (answer every push
with this status), `fail_next` (the next N pushes get 503), `retry_after` (seconds, with 429/503),
`lose_response_next` (apply the next N pushes, then answer 502 as if the response was lost),
`reject_batches` (list of batch names answered 400).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.world import World

DEFAULT_SECRET = "sandbox-storefront-secret"
SIGNATURE_TOLERANCE_SECONDS = 300


def routes(world: World) -> list[Route]:
    """The storefront's routes, bound to a world."""

    async def catalog(request: Request) -> JSONResponse:
        page = int(request.query_params.get("page", "1"))
        per_page = min(int(request.query_params.get("per_page", "500")), 1000)
        rows = world.catalog
        start = (page - 1) * per_page
        items = [{k: v for k, v in row.items() if k != "base_eur"} for row in rows[start : start + per_page]]
        next_page = page + 1 if start + per_page < len(rows) else None
        world.counters["storefront.catalog_requests"] += 1
        return JSONResponse({"items": items, "page": page, "next_page": next_page})

    async def prices(request: Request) -> Response:
        world.counters["storefront.requests"] += 1
        body = await request.body()
        faults = world.faults.get("storefront", {})
        retry_after = str(faults.get("retry_after", 1))
        if faults.get("outage"):
            return JSONResponse({"error": "down"}, status_code=503, headers={"Retry-After": retry_after})
        if faults.get("fail_next", 0) > 0:
            faults["fail_next"] -= 1
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": retry_after})
        if "status" in faults:
            status = int(faults["status"])
            headers = {"Retry-After": retry_after} if status in (429, 503) else {}
            return JSONResponse({"error": f"forced {status}"}, status_code=status, headers=headers)
        problem = verify_signature(body, request.headers.get("X-Signature", ""), _secret())
        if problem:
            world.counters["storefront.bad_signatures"] += 1
            return JSONResponse({"error": problem}, status_code=401)
        key = request.headers.get("Idempotency-Key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key header is required"}, status_code=400)
        try:
            payload: dict[str, Any] = json.loads(body)
            batch, entries = payload["batch"], payload["prices"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "body must be {batch, prices}"}, status_code=400)
        if batch in faults.get("reject_batches", []):
            return JSONResponse({"error": f"batch {batch} rejected"}, status_code=400)
        if key in world.applied_keys:
            world.counters["storefront.duplicates"] += 1
            return JSONResponse({"status": "already applied"}, status_code=409)
        for entry in entries:
            world.storefront_prices[entry["sku"]] = entry
        world.applied_keys[key] = len(entries)
        world.pushes.append({"key": key, "batch": batch, "prices": entries, "received_at": time.time()})
        world.counters["storefront.applied"] += len(entries)
        if faults.get("lose_response_next", 0) > 0:
            faults["lose_response_next"] -= 1
            return JSONResponse({"error": "gateway lost the response"}, status_code=502)
        return JSONResponse({"status": "applied", "count": len(entries)})

    async def pushes(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "pushes": world.pushes,
                "prices": world.storefront_prices,
                "duplicates": world.counters["storefront.duplicates"],
                "bad_signatures": world.counters["storefront.bad_signatures"],
            }
        )

    return [
        Route("/catalog", catalog, methods=["GET"]),
        Route("/prices", prices, methods=["POST"]),
        Route("/_pushes", pushes, methods=["GET"]),
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
