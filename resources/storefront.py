"""The storefront: its catalog endpoint and the signed, idempotent price webhook (DESIGN §7)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import polars as pl
from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from resources.schemas import CATALOG_SCHEMA, conform


class StorefrontError(RuntimeError):
    """A push the storefront refused for good (a 4xx other than 409/429): not retried."""


@dataclass
class PushOutcome:
    """What happened to one batch push."""

    key: str
    status: str  # applied | already_applied | failed
    http_status: int | None
    attempts: int
    error: str | None = None


@dataclass
class PushStats:
    """Counters of a sync's requests, for materialization metadata."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    duplicates_avoided: int = 0
    outcomes: list[PushOutcome] = field(default_factory=list)


def idempotency_key(batch: str, entries: Sequence[dict[str, Any]]) -> str:
    """Hash of a push's content: the same content always gets the same key, across retries and runs."""
    canonical = json.dumps({"batch": batch, "prices": list(entries)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Signature header value: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_after_seconds(value: str | None, default: float) -> float:
    """Parse Retry-After given as seconds or as an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return default


class Storefront(ConfigurableResource):
    """The storefront's HTTP API: catalog pages and the signed price webhook."""

    url: str = Field(description="Base URL, e.g. https://shop.example.com/api (STOREFRONT_URL)")
    webhook_secret: str = Field(description="HMAC secret for X-Signature (STOREFRONT_WEBHOOK_SECRET)")
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 5.0
    max_retry_after_seconds: float = 30.0
    catalog_page_size: int = 500

    @classmethod
    def from_env(cls) -> Storefront:
        """The storefront configured from STOREFRONT_URL and STOREFRONT_WEBHOOK_SECRET."""
        return cls(url=EnvVar("STOREFRONT_URL"), webhook_secret=EnvVar("STOREFRONT_WEBHOOK_SECRET"))

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout_seconds)

    def fetch_catalog(self, max_pages: int = 10_000) -> pl.DataFrame:
        """Read the whole catalog through its paginated endpoint (bounded by max_pages)."""
        rows: list[dict[str, Any]] = []
        page: int | None = 1
        with self._client() as client:
            for _ in range(max_pages):
                if page is None:
                    break
                response = client.get("/catalog", params={"page": page, "per_page": self.catalog_page_size})
                response.raise_for_status()
                body = response.json()
                rows.extend(body["items"])
                next_page = body.get("next_page")
                if next_page is not None and next_page <= page:
                    raise RuntimeError(f"storefront catalog: page {page} points back to page {next_page}")
                page = next_page
            else:
                raise RuntimeError(f"storefront catalog: more than {max_pages} pages")
        frame = pl.DataFrame(rows, schema_overrides={k: v for k, v in CATALOG_SCHEMA.items()})
        for name, dtype in CATALOG_SCHEMA.items():
            if name not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
        return conform(frame, CATALOG_SCHEMA)

    def push_prices(
        self,
        batch: str,
        entries: Sequence[dict[str, Any]],
        *,
        stats: PushStats,
        sleep: Callable[[float], None] = time.sleep,
    ) -> PushOutcome:
        """POST one batch of prices, signed, retrying per DESIGN §7; never raises for transport errors."""
        key = idempotency_key(batch, entries)
        body = json.dumps({"batch": batch, "prices": list(entries)}, separators=(",", ":")).encode()
        attempt = 0
        last_error = "no attempt made"
        last_status: int | None = None
        with self._client() as client:
            while attempt < self.max_attempts:
                attempt += 1
                if attempt > 1:
                    stats.retries += 1
                headers = {
                    "Content-Type": "application/json",
                    "Idempotency-Key": key,
                    # Signed at each attempt: the timestamp must be fresh for the receiver's tolerance.
                    "X-Signature": sign(self.webhook_secret, body, int(time.time())),
                }
                stats.requests += 1
                try:
                    response = client.post("/prices", content=body, headers=headers)
                except httpx.TransportError as exc:
                    last_status, last_error = None, f"{type(exc).__name__} talking to the storefront"
                    sleep(self._backoff(attempt))
                    continue
                last_status = response.status_code
                if 200 <= response.status_code < 300:
                    return PushOutcome(key, "applied", response.status_code, attempt)
                if response.status_code == 409:
                    stats.duplicates_avoided += 1
                    return PushOutcome(key, "already_applied", 409, attempt)
                if response.status_code in (429, 503):
                    stats.throttled += 1
                    wait = retry_after_seconds(response.headers.get("Retry-After"), self._backoff(attempt))
                    last_error = f"storefront answered {response.status_code}"
                    sleep(min(wait, self.max_retry_after_seconds))
                    continue
                if 400 <= response.status_code < 500:
                    detail = response.text[:200]
                    return PushOutcome(
                        key,
                        "failed",
                        response.status_code,
                        attempt,
                        f"storefront refused batch {batch}: HTTP {response.status_code} {detail}",
                    )
                last_error = f"storefront answered {response.status_code}"
                sleep(self._backoff(attempt))
        return PushOutcome(key, "failed", last_status, attempt, f"{last_error} after {attempt} attempts")

    def _backoff(self, attempt: int) -> float:
        # Full jitter keeps many retrying runs from hammering the storefront in lockstep.
        ceiling = min(self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)
