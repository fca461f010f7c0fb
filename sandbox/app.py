"""The sandbox ASGI app: every outside system the project talks to, on one 127.0.0.1 server.

Controls (for tests, the demo and the soak): `/_control/faults` (GET, POST per-target fault settings),
`/_control/reset`, `/_control/counters`, `/_control/market` (a new generation of every offer),
`/_control/storefront_wipe` (the storefront forgets its prices and keys), the price stream
(`POST /_control/stream` `{"every_s", "share", "suppliers"}` runs it in the background, `every_s` 0
stops it; `POST /_control/stream/step` moves once; `GET /_control/stream/changes?since=N` lists the
changes with their times), `GET /_control/offers` (every supplier's current offers: the ground truth)
and `GET /_control/storefront?since=N` (applied pushes from index N, live prices, exactly-once
counters). The alert webhook is `POST /alerts/<token>`, `GET /alerts` (sandbox/alerts.py).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from sandbox import alerts
from sandbox.world import STREAM_SUPPLIERS, World, check_stream_settings

log = logging.getLogger("sandbox")
# Each concern lives in its own module exposing routes(world); a module not written yet is skipped.
MOUNTS = {
    "/suppliers": "sandbox.suppliers",
    "/cdn": "sandbox.cdn",
    "/storefront": "sandbox.storefront",
    "/shopify": "sandbox.shopify",
}


Background = Callable[[], Coroutine[Any, Any, None]]


def create_app(world: World | None = None, background: list[Background] | None = None) -> Starlette:
    """Build the sandbox app around a world; `background` coroutines run while it serves."""
    world = world or World()
    routes: list[BaseRoute] = [
        Route("/_health", _health, methods=["GET"]),
        Route("/_control/faults", _faults, methods=["GET", "POST"]),
        Route("/_control/reset", _reset, methods=["POST"]),
        Route("/_control/counters", _counters, methods=["GET"]),
        Route("/_control/stream", _stream, methods=["GET", "POST"]),
        Route("/_control/stream/step", _stream_step, methods=["POST"]),
        Route("/_control/stream/changes", _stream_changes, methods=["GET"]),
        Route("/_control/offers", _ground_truth, methods=["GET"]),
        Route("/_control/storefront", _storefront_log, methods=["GET"]),
        *alerts.routes(world),
        Route("/_control/market", _market, methods=["POST"]),
        Route("/_control/storefront_wipe", _storefront_wipe, methods=["POST"]),
    ]
    for prefix, module_name in MOUNTS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            log.info("sandbox: %s not available, %s not mounted", module_name, prefix)
            continue
        routes.append(Mount(prefix, routes=module.routes(world)))
    app = Starlette(routes=routes, lifespan=_lifespan(background or []))
    app.state.world = world
    app.state.stream = None
    return app


def _lifespan(background: list[Background]) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(make()) for make in background]
        try:
            yield
        finally:
            stream: asyncio.Task[None] | None = app.state.stream
            stopping = [*tasks, *([stream] if stream is not None else [])]
            for task in stopping:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)

    return lifespan


def _world(request: Request) -> World:
    return request.app.state.world


async def _health(request: Request) -> JSONResponse:
    world = _world(request)
    return JSONResponse({"ok": True, "seed": world.seed, "catalog_size": world.catalog_size})


async def _faults(request: Request) -> JSONResponse:
    world = _world(request)
    if request.method == "POST":
        body: dict[str, Any] = await request.json()
        world.set_faults(body)
    return JSONResponse(world.faults)


async def _reset(request: Request) -> JSONResponse:
    world = _world(request)
    _stop_stream(request)
    world.reset_stream()
    world.alerts.clear()
    world.faults.clear()
    world.counters.clear()
    world.pushes.clear()
    world.applied_keys.clear()
    world.storefront_prices.clear()
    return JSONResponse({"ok": True})


async def _counters(request: Request) -> JSONResponse:
    return JSONResponse(dict(_world(request).counters))


async def _market(request: Request) -> JSONResponse:
    """Move the market: every supplier's prices change (a new generation)."""
    world = _world(request)
    world.generation += 1
    return JSONResponse({"generation": world.generation})


def _stop_stream(request: Request) -> None:
    task: asyncio.Task[None] | None = request.app.state.stream
    if task is not None:
        task.cancel()
        request.app.state.stream = None


def _stream_settings(body: dict[str, Any]) -> tuple[float, tuple[str, ...]]:
    share = float(body.get("share", 0.05))
    suppliers = tuple(body.get("suppliers") or STREAM_SUPPLIERS)
    check_stream_settings(share, suppliers)
    return share, suppliers


async def _stream(request: Request) -> JSONResponse:
    """GET: the stream's state. POST {"every_s", "share", "suppliers"}: run it in the background
    (every_s <= 0 stops it)."""
    world = _world(request)
    if request.method == "POST":
        body: dict[str, Any] = await request.json()
        try:
            share, suppliers = _stream_settings(body)
            every = float(body.get("every_s", 0))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        _stop_stream(request)
        if every > 0:

            async def flow() -> None:
                """One stream step every `every` seconds until cancelled."""
                while True:
                    await asyncio.sleep(every)
                    world.stream_step(share=share, suppliers=suppliers, at=time.time())

            request.app.state.stream = asyncio.get_running_loop().create_task(flow())
    running = request.app.state.stream is not None
    return JSONResponse({"running": running, "steps": world.stream_steps, "changes": len(world.stream_log)})


async def _stream_step(request: Request) -> JSONResponse:
    """One stream step now: body {"share", "suppliers"} (both optional); returns its changes."""
    world = _world(request)
    body: dict[str, Any] = await request.json() if await request.body() else {}
    try:
        share, suppliers = _stream_settings(body)
    except (TypeError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"changes": world.stream_step(share=share, suppliers=suppliers, at=time.time())})


async def _stream_changes(request: Request) -> JSONResponse:
    """The stream's changes from index `since` (default 0) on, and the index to ask from next."""
    world = _world(request)
    since = max(0, int(request.query_params.get("since", "0")))
    changes = world.stream_log[since:]
    return JSONResponse({"changes": changes, "next": since + len(changes)})


async def _ground_truth(request: Request) -> JSONResponse:
    """Every supplier's current offers (the ground truth) and the stream index they include."""
    world = _world(request)
    wanted = request.query_params.get("suppliers")
    names = wanted.split(",") if wanted else sorted({*STREAM_SUPPLIERS, "delta"})
    offers = {
        name: {
            sku: [str(offer.price), offer.currency, offer.stock] for sku, offer in world.offers(name).items()
        }
        for name in names
    }
    return JSONResponse(
        {"stream_next": len(world.stream_log), "generation": world.generation, "offers": offers}
    )


async def _storefront_log(request: Request) -> JSONResponse:
    """Pushes the storefront applied from index `since` on, its live prices and its exactly-once counters."""
    world = _world(request)
    since = max(0, int(request.query_params.get("since", "0")))
    pushes = world.pushes[since:]
    counters = {
        name: world.counters[f"storefront.{name}"]
        for name in ("duplicates", "bad_signatures", "repeated_versions", "applied")
    }
    return JSONResponse(
        {"pushes": pushes, "next": since + len(pushes), "prices": world.storefront_prices, **counters}
    )


async def _storefront_wipe(request: Request) -> JSONResponse:
    """The storefront loses its state (a restart without persistence): prices and known keys."""
    world = _world(request)
    world.storefront_prices.clear()
    world.applied_keys.clear()
    return JSONResponse({"ok": True})
