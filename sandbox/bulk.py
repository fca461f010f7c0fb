"""A sandbox for high-volume benchmarks (`bench/cycle.py`): listing suppliers and storefronts at 1M SKUs.

The regular sandbox (sandbox/suppliers.py) builds every answer record by record from Decimal offers,
which is right for fault tests and far too slow to serve a million SKUs. This one holds the market as
columns and pre-generates every answer body (bytes) once per market state, so serving a request is a
dictionary lookup:

- `alpha`: batch endpoint `POST /suppliers/alpha/offers` (`{"skus": [...]}`, decimal-string EUR prices,
  `unknown_skus` for SKUs it does not offer). Bodies are pre-generated for consecutive chunks of
  `chunk` active catalog SKUs (what a client asking for the catalog in order sends); any other SKU
  list is answered too, just built on demand.
- `beta`: cursor-paginated listing `GET /suppliers/beta/products?limit=&cursor=` (integer USD cents).
- `omega`: page-numbered listing `GET /suppliers/omega/items?page=&per_page=` (decimal-string GBP).
- storefronts under `/sf/<name>`: the signed, idempotent `POST /prices` webhook (sandbox/storefront.py's
  contract) and `GET /prices?page=&per_page=`; several independent storefronts can live side by side.

All suppliers authenticate with `X-Api-Key`. Control (`/_bench/...`): `move` moves a share of the market
(alpha undercuts the best offer by 10 % on a seeded share of active SKUs), `mismatches` counts SKUs
whose live price differs between two storefronts (or snapshots), `snapshot` copies a storefront, and
`watch` (POST to set, GET to read) records the moment a storefront's pushes made it show, for a set of
SKUs, the prices another storefront shows: the benchmark's end time, found where the pushes land
instead of by polling a comparison (which would take the CPU the measured cycle needs).
Run as `python -m sandbox.bulk --port P --skus N --seed S [--batches B]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pricing_assets.logic.batching import assign_batches
from sandbox.storefront import verify_signature

LISTING_SUPPLIERS = ("alpha", "beta", "omega")
CURRENCIES = {"alpha": "EUR", "beta": "USD", "omega": "GBP", "delta": "EUR"}
# EUR per unit, as in the benchmark's registry: used to find the best offer a move undercuts.
FX = {"EUR": Decimal(1), "USD": Decimal("0.92"), "GBP": Decimal("1.17")}
DEFAULT_KEY = "bulk-sandbox-key"
DEFAULT_SECRET = "bulk-sandbox-secret"
ALPHA_CHUNK = 5000
LISTING_PAGE = 10_000
UNDERCUT = Decimal("0.9")


def _unit(seed: int, salt: int, n: int) -> pl.Series:
    """n deterministic pseudo-random UInt64 values for (seed, salt), without a Python loop."""
    return pl.int_range(0, n, dtype=pl.UInt64, eager=True).hash(seed * 1_000_003 + salt)


def make_market(n: int, seed: int, batches: int | None = None) -> pl.DataFrame:
    """Catalog flags and every supplier's offer per SKU: `<id>_cents` (null: not offered), `<id>_stock`.

    With `batches`, in the order the catalog asset stores a catalog of that many batches (by batch, then
    SKU), so a client asking for the catalog in order asks for the pre-generated chunks.
    """
    base = (_unit(seed, 1, n) % 19_800 + 199).cast(pl.Int64)
    frame = pl.DataFrame(
        {
            "sku": "SKU-" + pl.int_range(0, n, eager=True).cast(pl.String).str.zfill(7),
            "active": _unit(seed, 2, n) % 50 != 0,
            "base_cents": base,
        }
    )
    columns = []
    for index, supplier in enumerate((*LISTING_SUPPLIERS, "delta")):
        salt = 10 * (index + 1)
        offered = _unit(seed, salt, n) % 100 < 90
        factor = (_unit(seed, salt + 1, n) % 40 + 85).cast(pl.Int64)
        eur_cents = base * factor // 100
        rate = float(FX[CURRENCIES[supplier]])
        cents = (eur_cents.cast(pl.Float64) / rate).round(0).cast(pl.Int64)
        columns.append(pl.when(offered).then(cents).otherwise(None).alias(f"{supplier}_cents"))
        columns.append(((_unit(seed, salt + 2, n) % 59) + 1).cast(pl.Int64).alias(f"{supplier}_stock"))
    frame = frame.with_columns(columns)
    if batches is None:
        return frame
    return assign_batches(frame, batches).sort("batch", "sku").drop("batch")


def moved_skus(market: pl.DataFrame, step: int, share: float, seed: int) -> pl.Series:
    """The active SKUs a market move touches: a seeded `share` of them, different at each step."""
    draw = _unit(seed, 1000 + step, market.height) % 1_000_000
    chosen = market.filter(pl.Series(draw < int(share * 1_000_000)) & pl.col("active"))
    return chosen.get_column("sku")


def move_market(market: pl.DataFrame, skus: pl.Series) -> pl.DataFrame:
    """Alpha undercuts the best offer of each SKU in `skus` by 10 % (in stock): their best price changes."""
    eur = [
        pl.col(f"{s}_cents").cast(pl.Float64) * float(FX[CURRENCIES[s]])
        for s in (*LISTING_SUPPLIERS, "delta")
    ]
    best = pl.min_horizontal(eur)
    undercut = (best * float(UNDERCUT)).floor().cast(pl.Int64)
    hit = pl.col("sku").is_in(skus.implode())
    return market.with_columns(
        alpha_cents=pl.when(hit).then(undercut).otherwise(pl.col("alpha_cents")),
        alpha_stock=pl.when(hit).then(pl.lit(50, dtype=pl.Int64)).otherwise(pl.col("alpha_stock")),
    )


def _decimal_text(cents: pl.Expr) -> pl.Expr:
    """Integer cents as a decimal string ("12.34")."""
    return pl.concat_str(
        [(cents // 100).cast(pl.String), pl.lit("."), (cents % 100).cast(pl.String).str.zfill(2)]
    )


def alpha_records(frame: pl.DataFrame) -> pl.Series:
    """Alpha's JSON record per offered row of `frame` (rows without an offer must be filtered out)."""
    return frame.select(
        pl.concat_str(
            [
                pl.lit('{"sku":"'),
                pl.col("sku"),
                pl.lit('","pricing":{"amount":"'),
                _decimal_text(pl.col("alpha_cents")),
                pl.lit('","currency":"EUR"},"inventory":{"available":'),
                pl.col("alpha_stock").cast(pl.String),
                pl.lit(',"in_stock":true}}'),
            ]
        )
    ).to_series()


def listing_records(frame: pl.DataFrame, supplier: str) -> pl.Series:
    """Beta's or omega's JSON record per row of `frame` (offered rows only)."""
    if supplier == "beta":
        pieces = [
            pl.lit('{"id":"'),
            pl.col("sku"),
            pl.lit('","pricing":{"amount_cents":'),
            pl.col("beta_cents").cast(pl.String),
            pl.lit(',"currency":"USD"},"inventory":{"available":'),
            pl.col("beta_stock").cast(pl.String),
            pl.lit('},"in_stock":true}'),
        ]
    else:
        pieces = [
            pl.lit('{"code":"'),
            pl.col("sku"),
            pl.lit('","price":"'),
            _decimal_text(pl.col("omega_cents")),
            pl.lit('","cur":"GBP","qty":'),
            pl.col("omega_stock").cast(pl.String),
            pl.lit("}"),
        ]
    return frame.select(pl.concat_str(pieces)).to_series()


def _join(records: list[str]) -> str:
    return "[" + ",".join(records) + "]"


def alpha_body(market: pl.DataFrame, skus: list[str]) -> bytes:
    """Alpha's answer to a request for `skus` (offered ones as items, the rest as unknown_skus)."""
    asked = market.filter(pl.col("sku").is_in(pl.Series(skus, dtype=pl.String).implode()))
    offered = asked.filter(pl.col("alpha_cents").is_not_null())
    unknown = sorted(set(skus) - set(offered.get_column("sku").to_list()))
    items = _join(alpha_records(offered).to_list())
    return f'{{"items":{items},"unknown_skus":{json.dumps(unknown)}}}'.encode()


def chunk_key(skus: list[str]) -> tuple[str, str, int]:
    """How a pre-generated alpha answer is found: (first SKU, last SKU, count) of the request."""
    return (skus[0], skus[-1], len(skus)) if skus else ("", "", 0)


def cursor_of(offset: int) -> str:
    """Beta's opaque cursor for a listing offset."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def offset_of(cursor: str) -> int:
    """The listing offset a beta cursor points at."""
    return int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":")[1])


@dataclass
class Bodies:
    """Pre-generated answers for one market state."""

    alpha: dict[tuple[str, str, int], bytes] = field(default_factory=dict)
    beta: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (limit, offset) -> body
    omega: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (per_page, page) -> body
    listings: dict[str, pl.DataFrame] = field(default_factory=dict)


def listing_page(listing: pl.DataFrame, supplier: str, offset: int, size: int) -> list[str]:
    """Records of one listing page."""
    return listing_records(listing.slice(offset, size), supplier).to_list()


def beta_page(listing: pl.DataFrame, offset: int, limit: int) -> bytes:
    """One page of beta's cursor listing."""
    end = offset + limit
    following = json.dumps(cursor_of(end)) if end < listing.height else "null"
    data = _join(listing_page(listing, "beta", offset, limit))
    return f'{{"data":{data},"next_cursor":{following},"total":{listing.height}}}'.encode()


def omega_page(listing: pl.DataFrame, page: int, per_page: int) -> bytes:
    """One page (1-based) of omega's numbered listing."""
    pages = max(1, -(-listing.height // per_page))
    results = _join(listing_page(listing, "omega", (page - 1) * per_page, per_page))
    return f'{{"results":{results},"page":{page},"total_pages":{pages},"total":{listing.height}}}'.encode()


def pregenerate(market: pl.DataFrame, chunk: int, page: int) -> Bodies:
    """Every answer a client walking the whole catalog or listing asks for, as bytes."""
    bodies = Bodies()
    active = market.filter(pl.col("active"))
    skus = active.get_column("sku").to_list()
    records = alpha_records(active.filter(pl.col("alpha_cents").is_not_null()))
    by_sku = dict(
        zip(active.filter(pl.col("alpha_cents").is_not_null()).get_column("sku"), records, strict=True)
    )
    for start in range(0, len(skus), chunk):
        asked = skus[start : start + chunk]
        items = [by_sku[s] for s in asked if s in by_sku]
        unknown = [s for s in asked if s not in by_sku]
        body = f'{{"items":{_join(items)},"unknown_skus":{json.dumps(unknown)}}}'
        bodies.alpha[chunk_key(asked)] = body.encode()
    for supplier in ("beta", "omega"):
        listing = market.filter(pl.col(f"{supplier}_cents").is_not_null())
        bodies.listings[supplier] = listing
        for number, offset in enumerate(range(0, listing.height, page), start=1):
            if supplier == "beta":
                bodies.beta[(page, offset)] = beta_page(listing, offset, page)
            else:
                bodies.omega[(page, number)] = omega_page(listing, number, page)
    return bodies


# A storefront's live price per SKU: (price, currency, available, supplier, version).
Live = tuple[str, str, bool, str | None, int]
LIVE_FIELDS = ("price", "currency", "available", "supplier", "version")


@dataclass
class Storefront:
    """One storefront: live prices by SKU and the Idempotency-Keys it applied."""

    prices: dict[str, Live] = field(default_factory=dict)
    # Each SKU's listing row, serialized when pushed: a 500-row page is a join, not 500 dumps.
    rows: dict[str, str] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    entries_applied: int = 0
    _order: list[str] | None = None

    def order(self) -> list[str]:
        """SKUs it shows, sorted (recomputed only after a push added SKUs)."""
        if self._order is None or len(self._order) != len(self.prices):
            self._order = sorted(self.prices)
        return self._order


@dataclass
class State:
    """The bulk sandbox's whole state."""

    seed: int
    market: pl.DataFrame
    bodies: Bodies
    chunk: int
    page: int
    steps: int = 0
    storefronts: dict[str, Storefront] = field(default_factory=dict)
    watch: Watch | None = None

    def storefront(self, name: str) -> Storefront:
        """The named storefront (created empty on first use)."""
        return self.storefronts.setdefault(name, Storefront())


def _shown_prices(a: Storefront, b: Storefront, skus: list[str]) -> Iterator[tuple[str, str, str | None]]:
    """(SKU, its price in a or "" if a shows none, its price in b or None) for each of `skus`, in order."""
    for sku in skus:
        in_a, in_b = a.prices.get(sku), b.prices.get(sku)
        yield sku, ("" if in_a is None else in_a[0]), (None if in_b is None else in_b[0])


@dataclass
class Watch:
    """SKUs whose price storefront `target` must come to show (as `reference` showed them when set)."""

    target: str
    want: dict[str, str]  # sku -> the reference storefront's price
    remaining: set[str]
    done_at: float | None = None  # unix seconds of the push that made the last SKU match

    @classmethod
    def start(cls, reference: Storefront, target: str, shop: Storefront, skus: list[str]) -> Watch:
        """A watch over `skus`; done at once if `shop` already shows every wanted price."""
        shown = list(_shown_prices(reference, shop, skus))
        want = {sku: wanted for sku, wanted, _ in shown}
        remaining = {sku for sku, wanted, price in shown if price != wanted}
        return cls(target, want, remaining, None if remaining else time.time())

    def pushed(self, name: str, entries: list[dict[str, object]]) -> None:
        """Account one applied push to storefront `name`."""
        if name != self.target:
            return
        for entry in entries:
            sku = str(entry["sku"])
            if sku in self.want:
                if entry["price"] == self.want[sku]:
                    self.remaining.discard(sku)
                else:
                    self.remaining.add(sku)
        if self.remaining:
            self.done_at = None
        elif self.done_at is None:
            self.done_at = time.time()


def mismatches(a: Storefront, b: Storefront, skus: list[str]) -> int:
    """How many of `skus` show a different price (or none) in b than in a."""
    return sum(1 for _, wanted, price in _shown_prices(a, b, skus) if price != wanted)


def build_app(state: State, api_key: str, secret: str) -> Starlette:
    """The bulk sandbox's routes over a state."""

    def authorized(request: Request) -> bool:
        return secrets.compare_digest(request.headers.get("X-Api-Key", ""), api_key)

    def unauthorized() -> Response:
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    async def alpha(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        skus = [str(sku) for sku in json.loads(await request.body())["skus"]]
        body = state.bodies.alpha.get(chunk_key(skus))
        if body is None:
            body = alpha_body(state.market, skus)
        return Response(body, media_type="application/json")

    async def beta(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        limit = int(request.query_params.get("limit", "500"))
        cursor = request.query_params.get("cursor")
        offset = offset_of(cursor) if cursor else 0
        body = state.bodies.beta.get((limit, offset))
        if body is None:
            body = beta_page(state.bodies.listings["beta"], offset, limit)
        return Response(body, media_type="application/json")

    async def omega(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        per_page = int(request.query_params.get("per_page", "500"))
        page = max(1, int(request.query_params.get("page", "1")))
        body = state.bodies.omega.get((per_page, page))
        if body is None:
            body = omega_page(state.bodies.listings["omega"], page, per_page)
        return Response(body, media_type="application/json")

    async def push(request: Request) -> Response:
        shop = state.storefront(request.path_params["name"])
        body = await request.body()
        problem = verify_signature(body, request.headers.get("X-Signature", ""), secret)
        if problem:
            return JSONResponse({"error": problem}, status_code=401)
        key = request.headers.get("Idempotency-Key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key header is required"}, status_code=400)
        if key in shop.keys:
            return JSONResponse({"status": "already_applied", "idempotency_key": key}, status_code=409)
        entries = json.loads(body)["prices"]
        for e in entries:
            shop.prices[e["sku"]] = (e["price"], e["currency"], e["available"], e["supplier"], e["version"])
            shop.rows[e["sku"]] = json.dumps(
                {name: e[name] for name in ("sku", *LIVE_FIELDS)}, separators=(",", ":")
            )
        shop.keys.add(key)
        shop.entries_applied += len(entries)
        if state.watch is not None:
            state.watch.pushed(request.path_params["name"], entries)
        return JSONResponse({"status": "applied", "count": len(entries)})

    async def live(request: Request) -> Response:
        shop = state.storefront(request.path_params["name"])
        page = max(1, int(request.query_params.get("page", "1")))
        per_page = max(1, min(int(request.query_params.get("per_page", "500")), 10_000))
        order = shop.order()
        start = (page - 1) * per_page
        items = _join([shop.rows[sku] for sku in order[start : start + per_page]])
        next_page = json.dumps(page + 1 if start + per_page < len(order) else None)
        body = f'{{"items":{items},"page":{page},"next_page":{next_page},"total":{len(order)}}}'
        return Response(body, media_type="application/json")

    async def move(request: Request) -> Response:
        share = float((await request.json()).get("share", 0.05))
        state.steps += 1
        skus = moved_skus(state.market, state.steps, share, state.seed)
        state.market = move_market(state.market, skus)
        state.bodies = pregenerate(state.market, state.chunk, state.page)
        return JSONResponse({"step": state.steps, "skus": skus.to_list()})

    async def compare(request: Request) -> Response:
        ask = await request.json()
        a, b = state.storefront(ask["a"]), state.storefront(ask["b"])
        return JSONResponse({"mismatched": mismatches(a, b, ask["skus"])})

    async def watch(request: Request) -> Response:
        if request.method == "POST":
            ask = await request.json()
            reference, target = state.storefront(ask["reference"]), ask["target"]
            state.watch = Watch.start(reference, target, state.storefront(target), ask["skus"])
        if state.watch is None:
            return JSONResponse({"error": "no watch set"}, status_code=404)
        return JSONResponse({"remaining": len(state.watch.remaining), "done_at": state.watch.done_at})

    async def snapshot(request: Request) -> Response:
        ask = await request.json()
        shop = state.storefront(ask["name"])
        state.storefronts[ask["as"]] = Storefront(prices=dict(shop.prices), rows=dict(shop.rows))
        return JSONResponse({"skus": len(shop.prices)})

    async def stats(request: Request) -> Response:
        shops = {
            name: {"skus": len(s.prices), "keys": len(s.keys), "entries_applied": s.entries_applied}
            for name, s in state.storefronts.items()
        }
        return JSONResponse({"steps": state.steps, "storefronts": shops})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/suppliers/alpha/offers", alpha, methods=["POST"]),
            Route("/suppliers/beta/products", beta, methods=["GET"]),
            Route("/suppliers/omega/items", omega, methods=["GET"]),
            Route("/sf/{name}/prices", push, methods=["POST"]),
            Route("/sf/{name}/prices", live, methods=["GET"]),
            Route("/_bench/move", move, methods=["POST"]),
            Route("/_bench/mismatches", compare, methods=["POST"]),
            Route("/_bench/snapshot", snapshot, methods=["POST"]),
            Route("/_bench/watch", watch, methods=["GET", "POST"]),
            Route("/_bench/stats", stats, methods=["GET"]),
            Route("/_health", health, methods=["GET"]),
        ]
    )


def main() -> None:
    """Generate the market, pre-generate its answers and serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--skus", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--chunk", type=int, default=ALPHA_CHUNK)
    parser.add_argument("--page", type=int, default=LISTING_PAGE)
    parser.add_argument(
        "--batches", type=int, default=None, help="order the market as a catalog of N batches"
    )
    args = parser.parse_args()
    market = make_market(args.skus, args.seed, args.batches)
    state = State(args.seed, market, pregenerate(market, args.chunk, args.page), args.chunk, args.page)
    api_key = os.environ.get("BULK_SANDBOX_KEY") or DEFAULT_KEY
    secret = os.environ.get("STOREFRONT_WEBHOOK_SECRET") or DEFAULT_SECRET
    app = build_app(state, api_key, secret)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
