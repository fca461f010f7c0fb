"""Sandbox REST suppliers (docs/architecture.md §9), mounted under /suppliers, with switchable fault modes.

- `alpha`: batch endpoint `GET|POST /alpha/v1/offers` (`?skus=a,b` or `{"skus": [...]}`, at most
  MAX_BATCH), API key header `X-Api-Key`, decimal-string prices in EUR.
- `beta`: paginated listing `GET /beta/v2/products` (`?limit=&cursor=`, or `?page=&per_page=`), OAuth2
  client credentials at `POST /beta/oauth/token` with short-lived bearer tokens, integer cents in USD.
- `gamma`: Oxylabs-style `POST /gamma/v1/queries` with `{"source": "amazon_product", "query": <ASIN>,
  "parse": true}`, HTTP basic, JSON-number prices in GBP and stock text ("Only 3 left in stock").
  A query may be the ASIN (`gamma_asin(sku)`) or the SKU itself.

Faults, from `world.faults[<supplier>]` (counts decrement as they fire, so they are deterministic):
`latency_ms`; `outage` (503 + Retry-After); `retry_after` (seconds, default 1) and
`retry_after_http_date` (send it as an HTTP date); `fail_next` (next N answers are `fail_status`,
default 500); `error_rate` (seeded random 500s); `throttle_next` (next N answers 429 + Retry-After);
`rate_limit_rps` + `rate_limit_burst` (token bucket, 429 + Retry-After when empty); `timeout_next` (next N
answers wait `hang_s`, default 2); `malformed_next` (next N bodies are truncated JSON);
`bad_rows` (next N records get a bad value: price <= 0, NaN, unknown currency, absurd price, negative
stock); `missing_fields` (next N records lose `missing_field`, default price); `duplicate_conflicts`
(next N records are sent twice with different prices). beta only: `token_ttl_s` (default 300),
`revoke_tokens_after` (a token stops working after N uses although not expired), `repeat_cursor`,
`empty_last_page`, `empty_page_at` (that page number, 1-based in either style, answers no records
while pagination goes on; with `empty_page_count` N only the next N times), `wrong_total` (the
advertised `total` record count is off by this many). alpha only: `drop_items` (the next N records
are left out of the answer without being listed in `unknown_skus`). gamma only: `not_found` (list of SKUs
answered as not found), `not_found_as_http`.

Counters (`world.counters`): `<id>.requests`, `.ok`, `.429`, `.5xx`, `.401`, `.timeouts`, `.malformed`,
`.bad_rows` (records that validation must quarantine, duplicates counting both copies), `.skus_asked`,
`.max_in_flight` (most requests handled at once), `beta.tokens_issued`, `gamma.not_found`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.world import SandboxOffer, World

MAX_BATCH = 500
DEFAULT_CREDENTIALS = {
    "ALPHA_API_KEY": "sandbox-alpha-key",
    "BETA_CLIENT_ID": "sandbox-beta",
    "BETA_CLIENT_SECRET": "sandbox-beta-secret",
    "GAMMA_USERNAME": "sandbox-gamma",
    "GAMMA_PASSWORD": "sandbox-gamma-pass",
}
BAD_KINDS = ("price_not_positive", "price_nan", "unknown_currency", "absurd_price", "negative_stock")


def credential(name: str) -> str:
    """A credential the sandbox accepts: the env var, else the demo default."""
    return os.environ.get(name) or DEFAULT_CREDENTIALS[name]


def gamma_asin(sku: str) -> str:
    """The ASIN gamma lists a SKU under (deterministic, Amazon-shaped)."""
    return "B0" + hashlib.md5(sku.encode()).hexdigest()[:8].upper()


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class _State:
    """Per-app state that the world does not hold: issued tokens, rate buckets, random streams."""

    tokens: dict[str, list[float]] = field(default_factory=dict)  # token -> [expires_at, uses_left]
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    rngs: dict[str, Any] = field(default_factory=dict)
    asins: dict[int, dict[str, str]] = field(default_factory=dict)  # generation -> ASIN -> SKU


def _take(faults: dict[str, Any], key: str) -> bool:
    """Consume one firing of a counted fault (`key`: N remaining)."""
    remaining = int(faults.get(key, 0) or 0)
    if remaining > 0:
        faults[key] = remaining - 1
        return True
    return False


def _retry_after(faults: dict[str, Any], seconds: float) -> str:
    if faults.get("retry_after_http_date"):
        return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)
    return f"{seconds:g}"


def routes(world: World) -> list[Route]:
    """The three suppliers' routes, bound to a world."""
    state = _State()

    def faults_of(target: str) -> dict[str, Any]:
        return world.faults.get(target, {})

    def count(target: str, name: str, amount: int = 1) -> None:
        world.counters[f"{target}.{name}"] += amount

    def rate_limited(target: str, faults: dict[str, Any]) -> Response | None:
        rps = faults.get("rate_limit_rps")
        if not rps:
            return None
        burst = float(faults.get("rate_limit_burst", 1))
        now = time.monotonic()
        if world.counters[f"{target}.requests"] == 1:
            state.buckets.pop(target, None)  # first request since a reset: start with a full bucket
        bucket = state.buckets.setdefault(target, _Bucket(tokens=burst, updated=now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * float(rps))
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        wait = (1 - bucket.tokens) / float(rps)
        count(target, "429")
        return JSONResponse(
            {"error": "rate limited"}, status_code=429, headers={"Retry-After": _retry_after(faults, wait)}
        )

    async def gate(target: str, request: Request, authorized: Callable[[Request], bool]) -> Response | None:
        """Counting, rate limit, auth and transport faults shared by every data endpoint."""
        count(target, "requests")
        faults = faults_of(target)
        limited = rate_limited(target, faults)
        if limited is not None:
            return limited
        if not authorized(request):
            count(target, "401")
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if faults.get("latency_ms"):
            await asyncio.sleep(float(faults["latency_ms"]) / 1000)
        retry_after = float(faults.get("retry_after", 1))
        if faults.get("outage"):
            count(target, "5xx")
            return JSONResponse(
                {"error": "down"}, status_code=503, headers={"Retry-After": _retry_after(faults, retry_after)}
            )
        if _take(faults, "fail_next"):
            count(target, "5xx")
            return JSONResponse({"error": "server error"}, status_code=int(faults.get("fail_status", 500)))
        if _take(faults, "throttle_next"):
            count(target, "429")
            return JSONResponse(
                {"error": "slow down"},
                status_code=429,
                headers={"Retry-After": _retry_after(faults, retry_after)},
            )
        rate = float(faults.get("error_rate", 0) or 0)
        if rate:
            rng = state.rngs.setdefault(target, world.rng(f"suppliers.{target}.errors"))
            if rng.random() < rate:
                count(target, "5xx")
                return JSONResponse({"error": "random failure"}, status_code=500)
        if _take(faults, "timeout_next"):
            count(target, "timeouts")
            await asyncio.sleep(float(faults.get("hang_s", 2)))
        return None

    def respond(target: str, payload: Any) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        if _take(faults_of(target), "malformed_next"):
            count(target, "malformed")
            return Response(body[: max(1, len(body) // 2)], media_type="application/json")
        count(target, "ok")
        return Response(body, media_type="application/json")

    def corrupt(
        target: str,
        records: list[dict[str, Any]],
        spoil: Callable[[dict[str, Any], str], None],
        *,
        duplicates: bool = True,
    ) -> list[dict[str, Any]]:
        """Apply the data faults to records in order; each damaged record is counted in `.bad_rows`."""
        faults = faults_of(target)
        if not any(faults.get(key) for key in ("bad_rows", "missing_fields", "duplicate_conflicts")):
            return records
        out: list[dict[str, Any]] = []
        for record in records:
            if _take(faults, "bad_rows"):
                kind = BAD_KINDS[world.counters[f"{target}.bad_rows"] % len(BAD_KINDS)]
                spoil(record, kind)
                count(target, "bad_rows")
                out.append(record)
            elif _take(faults, "missing_fields"):
                _drop(record, str(faults.get("missing_field", "price")), target)
                count(target, "bad_rows")
                out.append(record)
            elif duplicates and _take(faults, "duplicate_conflicts"):
                twin = copy.deepcopy(record)
                spoil(twin, "other_price")
                count(target, "bad_rows", 2)
                out.extend([record, twin])
            else:
                out.append(record)
        return out

    # ------------------------------------------------------------ alpha: batch endpoint, API key

    def alpha_authorized(request: Request) -> bool:
        return secrets.compare_digest(request.headers.get("X-Api-Key", ""), credential("ALPHA_API_KEY"))

    def alpha_record(sku: str, offer: SandboxOffer) -> dict[str, Any]:
        return {
            "sku": sku,
            "pricing": {"amount": f"{offer.price:.2f}", "currency": offer.currency},
            "inventory": {"available": offer.stock, "in_stock": offer.stock is None or offer.stock > 0},
        }

    def alpha_spoil(record: dict[str, Any], kind: str) -> None:
        pricing, inventory = record["pricing"], record["inventory"]
        if kind == "price_not_positive":
            pricing["amount"] = "-5.00"
        elif kind == "price_nan":
            pricing["amount"] = "NaN"
        elif kind == "unknown_currency":
            pricing["currency"] = "XXX"
        elif kind == "absurd_price":
            pricing["amount"] = "999999999.00"
        elif kind == "negative_stock":
            inventory["available"] = -3
        else:
            pricing["amount"] = str(Decimal(pricing["amount"]) + 1)

    async def alpha_offers(request: Request) -> Response:
        denied = await gate("alpha", request, alpha_authorized)
        if denied is not None:
            return denied
        if request.method == "POST":
            try:
                skus = [str(sku) for sku in (await request.json())["skus"]]
            except (ValueError, KeyError, TypeError):
                return JSONResponse({"error": 'body must be {"skus": [...]}'}, status_code=400)
        else:
            skus = [sku for sku in request.query_params.get("skus", "").split(",") if sku]
        if len(skus) > MAX_BATCH:
            return JSONResponse({"error": f"at most {MAX_BATCH} skus per request"}, status_code=400)
        count("alpha", "skus_asked", len(skus))
        offers = world.offers("alpha")
        items = [alpha_record(sku, offers[sku]) for sku in skus if sku in offers]
        missing = [sku for sku in skus if sku not in offers]
        faults = faults_of("alpha")
        if faults.get("drop_items"):
            # A truncated answer: records silently left out, not listed as unknown either.
            items = [item for item in items if not _take(faults, "drop_items")]
        return respond("alpha", {"items": corrupt("alpha", items, alpha_spoil), "unknown_skus": missing})

    # ------------------------------------------------------------ beta: paginated listing, OAuth2

    async def beta_token(request: Request) -> Response:
        count("beta", "token_requests")
        # Parsed by hand: starlette's form parser needs python-multipart, which the project does not use.
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, binascii.Error):
                client_id = client_secret = None
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if not (
            secrets.compare_digest(str(client_id or ""), credential("BETA_CLIENT_ID"))
            and secrets.compare_digest(str(client_secret or ""), credential("BETA_CLIENT_SECRET"))
        ):
            count("beta", "401")
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        faults = faults_of("beta")
        ttl = float(faults.get("token_ttl_s", 300))
        uses = float(faults.get("revoke_tokens_after", 0) or float("inf"))
        token = secrets.token_urlsafe(16)
        state.tokens[token] = [time.monotonic() + ttl, uses]
        count("beta", "tokens_issued")
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    def beta_authorized(request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        entry = state.tokens.get(header[7:])
        if entry is None or time.monotonic() >= entry[0] or entry[1] <= 0:
            return False
        entry[1] -= 1
        return True

    def beta_record(sku: str, offer: SandboxOffer) -> dict[str, Any]:
        return {
            "id": sku,
            "pricing": {"amount_cents": int(offer.price * 100), "currency": offer.currency},
            "inventory": {"available": offer.stock},
            "in_stock": offer.stock is None or offer.stock > 0,
        }

    def beta_spoil(record: dict[str, Any], kind: str) -> None:
        pricing = record["pricing"]
        if kind == "price_not_positive":
            pricing["amount_cents"] = -500
        elif kind == "price_nan":
            pricing["amount_cents"] = "NaN"
        elif kind == "unknown_currency":
            pricing["currency"] = "XXX"
        elif kind == "absurd_price":
            pricing["amount_cents"] = 99_999_999_900
        elif kind == "negative_stock":
            record["inventory"]["available"] = -3
        else:
            pricing["amount_cents"] += 100

    def cursor_for(offset: int) -> str:
        return base64.urlsafe_b64encode(f"{world.generation}:{offset}".encode()).decode()

    def page_emptied(faults: dict[str, Any], page: int) -> bool:
        """Whether the `empty_page_at` fault empties this page (1-based) now."""
        if faults.get("empty_page_at") != page:
            return False
        return "empty_page_count" not in faults or _take(faults, "empty_page_count")

    async def beta_products(request: Request) -> Response:
        denied = await gate("beta", request, beta_authorized)
        if denied is not None:
            return denied
        faults = faults_of("beta")
        listing = sorted(world.offers("beta").items())
        total = len(listing) + int(faults.get("wrong_total", 0) or 0)
        params = request.query_params
        if "page" in params:
            per_page = max(1, min(int(params.get("per_page", 100)), 1000))
            page = max(1, int(params["page"]))
            start = (page - 1) * per_page
            items = [beta_record(sku, offer) for sku, offer in listing[start : start + per_page]]
            if page_emptied(faults, page):
                items = []
            payload: dict[str, Any] = {
                "data": corrupt("beta", items, beta_spoil),
                "page": page,
                "total": total,
            }
            if not faults.get("empty_last_page"):
                payload["total_pages"] = max(1, -(-len(listing) // per_page))
            return respond("beta", payload)
        limit = max(1, min(int(params.get("limit", 100)), 1000))
        offset = 0
        if params.get("cursor"):
            try:
                offset = int(base64.urlsafe_b64decode(params["cursor"]).decode().split(":")[1])
            except (ValueError, IndexError, binascii.Error):
                return JSONResponse({"error": "bad cursor"}, status_code=400)
        items = [beta_record(sku, offer) for sku, offer in listing[offset : offset + limit]]
        if page_emptied(faults, offset // limit + 1):
            items = []
        end = offset + limit
        if faults.get("repeat_cursor") and offset > 0:
            following: str | None = cursor_for(offset)  # points back at this very page: a loop
        elif end < len(listing) or (faults.get("empty_last_page") and offset < len(listing)):
            following = cursor_for(end)
        else:
            following = None
        payload = {"data": corrupt("beta", items, beta_spoil), "next_cursor": following, "total": total}
        return respond("beta", payload)

    # ------------------------------------------------------------ gamma: Oxylabs-style per-SKU POST

    def gamma_authorized(request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, binascii.Error):
            return False
        return secrets.compare_digest(user, credential("GAMMA_USERNAME")) and secrets.compare_digest(
            password, credential("GAMMA_PASSWORD")
        )

    def stock_text(stock: int | None) -> str:
        if stock is None or stock > 5:
            return "In Stock"
        if stock == 0:
            return "Currently unavailable."
        return f"Only {stock} left in stock - order soon."

    def gamma_spoil(content: dict[str, Any], kind: str) -> None:
        if kind == "price_not_positive":
            content["price"] = -5.0
        elif kind == "price_nan":
            content["price"] = "NaN"
        elif kind == "unknown_currency":
            content["currency"] = "XXX"
        elif kind in ("absurd_price", "negative_stock"):
            content["price"] = 999999999.0
        else:
            content["price"] = float(content["price"]) + 1

    async def gamma_queries(request: Request) -> Response:
        denied = await gate("gamma", request, gamma_authorized)
        if denied is not None:
            return denied
        try:
            body = await request.json()
            query = str(body["query"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'body must be {"source", "query", "parse"}'}, status_code=400)
        if body.get("source") != "amazon_product":
            return JSONResponse({"error": f"unsupported source {body.get('source')!r}"}, status_code=400)
        count("gamma", "skus_asked")
        offers = world.offers("gamma")
        by_asin = state.asins.get(world.generation)
        if by_asin is None:
            by_asin = state.asins[world.generation] = {gamma_asin(sku): sku for sku in offers}
        sku = by_asin.get(query) or (query if query in offers else None)
        faults = faults_of("gamma")
        url = f"https://www.amazon.co.uk/dp/{query}"
        if sku is None or sku in faults.get("not_found", []):
            count("gamma", "not_found")
            if faults.get("not_found_as_http"):
                return JSONResponse({"message": "Not found"}, status_code=404)
            return respond(
                "gamma",
                {"results": [{"content": {"parse_status_code": 12005}, "status_code": 404, "url": url}]},
            )
        offer = offers[sku]
        content: dict[str, Any] = {
            "asin": gamma_asin(sku),
            "title": f"Digital item {sku}",
            "price": float(offer.price),
            "currency": offer.currency,
            "stock": stock_text(offer.stock),
            "delivery": [{"type": "FREE", "date": {"by": "Tuesday, 5 May"}}],
            "parse_status_code": 12000,
        }
        content = corrupt("gamma", [content], gamma_spoil, duplicates=False)[0]
        return respond("gamma", {"results": [{"content": content, "status_code": 200, "url": url}]})

    in_flight: dict[str, int] = {}

    def tracked(target: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """Record the most requests a supplier had in flight at once (`<id>.max_in_flight`)."""

        async def endpoint(request: Request) -> Response:
            in_flight[target] = in_flight.get(target, 0) + 1
            key = f"{target}.max_in_flight"
            world.counters[key] = max(world.counters[key], in_flight[target])
            try:
                return await handler(request)
            finally:
                in_flight[target] -= 1

        return endpoint

    return [
        Route("/alpha/v1/offers", tracked("alpha", alpha_offers), methods=["GET", "POST"]),
        Route("/beta/oauth/token", beta_token, methods=["POST"]),
        Route("/beta/v2/products", tracked("beta", beta_products), methods=["GET"]),
        Route("/gamma/v1/queries", tracked("gamma", gamma_queries), methods=["POST"]),
    ]


def _drop(record: dict[str, Any], name: str, target: str) -> None:
    """Remove a field from a supplier record wherever that supplier keeps it."""
    locations = {
        "alpha": {"price": ("pricing", "amount"), "sku": (None, "sku"), "currency": ("pricing", "currency")},
        "beta": {
            "price": ("pricing", "amount_cents"),
            "sku": (None, "id"),
            "currency": ("pricing", "currency"),
        },
        "gamma": {"price": (None, "price"), "sku": (None, "asin"), "currency": (None, "currency")},
    }
    parent, key = locations[target][name]
    (record if parent is None else record[parent]).pop(key, None)
