"""The sandbox storefront's page for people (`/storefront/`): counters, live prices, recent pushes.

Machines read the same state as JSON at `/storefront/_pushes`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from sandbox.world import World

DEFAULT_PRICE_ROWS = 200
RECENT_PUSHES = 20
REFRESH_SECONDS = 10

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.counters { display: flex; gap: 1rem; flex-wrap: wrap; }
.counter { border: 1px solid #ccc; border-radius: 6px; padding: .5rem 1rem; min-width: 8rem; }
.counter b { display: block; font-size: 1.6rem; }
.counter.bad b { color: #b00; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { border-bottom: 1px solid #ddd; padding: .2rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; }
"""


def counters(world: World) -> dict[str, int]:
    """The numbers the page leads with: what was pushed, what the storefront holds, what went wrong."""
    return {
        "pushes": len(world.pushes),
        "prices": len(world.storefront_prices),
        "available": sum(1 for entry in world.storefront_prices.values() if entry.get("available")),
        "duplicates": world.counters["storefront.duplicates"],
        "bad_signatures": world.counters["storefront.bad_signatures"],
        "repeated_versions": world.counters["storefront.repeated_versions"],
    }


def render(world: World, *, limit: int = DEFAULT_PRICE_ROWS, sku_prefix: str = "") -> str:
    """The page's HTML for the world's current storefront state."""
    numbers = counters(world)
    bad = {"duplicates", "bad_signatures", "repeated_versions"}
    labels = {
        "pushes": "pushes applied",
        "prices": "SKUs priced",
        "available": "available",
        "duplicates": "duplicates refused",
        "bad_signatures": "bad signatures",
        "repeated_versions": "versions applied twice",
    }
    cards = "".join(
        f'<div class="counter{" bad" if name in bad and value else ""}" id="counter-{name}">'
        f"<b>{value}</b>{labels[name]}</div>"
        for name, value in numbers.items()
    )
    skus = sorted(sku for sku in world.storefront_prices if sku.startswith(sku_prefix))
    shown = skus[:limit]
    price_rows = "".join(_price_row(sku, world.storefront_prices[sku]) for sku in shown)
    more = (
        f'<p class="muted">{len(shown)} of {len(skus)} SKUs shown: '
        f'<a href="?limit={len(skus)}&amp;sku={escape(sku_prefix)}">show all</a></p>'
        if len(shown) < len(skus)
        else ""
    )
    recent = list(reversed(world.pushes[-RECENT_PUSHES:]))
    push_rows = "".join(_push_row(push) for push in recent)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>Sandbox storefront</title><style>{_STYLE}</style></head>
<body>
<h1>Sandbox storefront</h1>
<p class="muted">What the storefront accepted from signed price pushes (refreshes every {REFRESH_SECONDS} s;
JSON: <a href="_pushes">_pushes</a>).</p>
<div class="counters">{cards}</div>
<h2>Current prices</h2>
<form method="get"><input name="sku" placeholder="SKU starts with" value="{escape(sku_prefix)}">
<button>filter</button></form>
{more}
<table id="prices"><thead><tr><th>SKU</th><th>price</th><th>currency</th><th>available</th>
<th>supplier</th><th>version</th></tr></thead>
<tbody>{price_rows or '<tr><td colspan="6" class="muted">no price pushed yet</td></tr>'}</tbody></table>
<h2>Recent pushes</h2>
<table id="pushes"><thead><tr><th>received (UTC)</th><th>batch</th><th>prices</th><th>available</th>
<th>Idempotency-Key</th></tr></thead>
<tbody>{push_rows or '<tr><td colspan="5" class="muted">no push yet</td></tr>'}</tbody></table>
</body></html>
"""


def _price_row(sku: str, entry: dict[str, Any]) -> str:
    def text(name: str) -> str:
        value = entry.get(name)
        return "—" if value is None else escape(str(value))

    return (
        f'<tr><td>{escape(sku)}</td><td class="num">{text("price")}</td><td>{text("currency")}</td>'
        f"<td>{'yes' if entry.get('available') else 'no'}</td><td>{text('supplier')}</td>"
        f'<td class="num">{text("version")}</td></tr>'
    )


def _push_row(push: dict[str, Any]) -> str:
    received = datetime.fromtimestamp(push["received_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    prices = push["prices"]
    available = sum(1 for entry in prices if entry.get("available"))
    return (
        f"<tr><td>{received}</td><td>{escape(str(push['batch']))}</td>"
        f'<td class="num">{len(prices)}</td><td class="num">{available}</td>'
        f"<td><code>{escape(str(push['key'])[:16])}…</code></td></tr>"
    )


def page_route(world: World) -> Route:
    """The `/` route of the storefront mount: `?sku=` filters by prefix, `?limit=` caps the price rows."""

    async def page(request: Request) -> HTMLResponse:
        try:
            limit = max(0, int(request.query_params.get("limit", DEFAULT_PRICE_ROWS)))
        except ValueError:
            limit = DEFAULT_PRICE_ROWS
        return HTMLResponse(render(world, limit=limit, sku_prefix=request.query_params.get("sku", "")))

    return Route("/", page, methods=["GET"])
