"""Sandbox alert webhook: receives Slack-compatible alerts (`{"text": ...}`) so tests and the soak count them.

- `POST /alerts/<token>`: one alert. Like a Slack incoming webhook, the URL itself is the secret: a
  token other than `$SANDBOX_ALERT_TOKEN` (default `sandbox-alert-token`) is answered 404 and nothing is
  recorded. A body without a string `text` is answered 400. Accepted: 200 `ok`.
- `GET /alerts`: every alert received, in order: `{"alerts": [{"seq", "text", "received_at"}]}`.

Faults (`world.faults["alerts"]`): `outage` (503 to every post), `fail_next` (the next N posts get 503).
Counters: `alerts.received`, `alerts.rejected`, `alerts.failed`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.world import World

DEFAULT_TOKEN = "sandbox-alert-token"


def alert_token() -> str:
    """The token the sandbox's webhook URL must end with."""
    return os.environ.get("SANDBOX_ALERT_TOKEN") or DEFAULT_TOKEN


def routes(world: World) -> list[Route]:
    """The alert webhook's routes, bound to a world (full paths, not mounted)."""

    async def receive(request: Request) -> Response:
        """Record one alert, as Slack's incoming webhook answers it."""
        if not secrets.compare_digest(request.path_params["token"], alert_token()):
            world.counters["alerts.rejected"] += 1
            return PlainTextResponse("no_service", status_code=404)
        faults = world.faults.get("alerts", {})
        remaining = int(faults.get("fail_next", 0) or 0)
        if faults.get("outage") or remaining > 0:
            if remaining > 0:
                faults["fail_next"] = remaining - 1
            world.counters["alerts.failed"] += 1
            return PlainTextResponse("unavailable", status_code=503)
        try:
            body: Any = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            world.counters["alerts.rejected"] += 1
            return PlainTextResponse("invalid_payload", status_code=400)
        world.alerts.append({"seq": len(world.alerts), "text": body["text"], "received_at": time.time()})
        world.counters["alerts.received"] += 1
        return PlainTextResponse("ok")

    async def listing(request: Request) -> JSONResponse:
        """Every alert received, in order."""
        return JSONResponse({"alerts": world.alerts})

    return [
        Route("/alerts", listing, methods=["GET"]),
        Route("/alerts/{token}", receive, methods=["POST"]),
    ]
