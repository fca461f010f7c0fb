"""The sandbox ASGI app: every outside system the project talks to, on one 127.0.0.1 server."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from sandbox.world import World

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
    return app


def _lifespan(background: list[Background]) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(make()) for make in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

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


async def _storefront_wipe(request: Request) -> JSONResponse:
    """The storefront loses its state (a restart without persistence): prices and known keys."""
    world = _world(request)
    world.storefront_prices.clear()
    world.applied_keys.clear()
    return JSONResponse({"ok": True})
