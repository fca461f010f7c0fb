"""The storefront: its catalog endpoint and the signed, idempotent price webhook (docs/architecture.md §7)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import polars as pl
from dagster import ConfigurableResource, EnvVar
from pydantic import Field
from tenacity import RetryCallState

from resources.config import ConfigError
from resources.http_retry import RetryableError, parse_retry_after, retrying_for
from resources.schemas import CATALOG_SCHEMA, MONEY, conform_filling

ADAPTERS = ("webhook", "shopify")
ADAPTER_ENV = "STOREFRONT_ADAPTER"

# Outcome of one push, for the whole chunk or (in PushOutcome.per_sku) for single SKUs:
APPLIED = "applied"  # the storefront applied it now
ALREADY_APPLIED = "already_applied"  # 409 confirming the key, which an earlier attempt may have applied
PARTIAL = "partial"  # applied except the SKUs listed in per_sku (Shopify userErrors)
REFUSED = "refused"  # a definitive no (4xx other than 429, or an unconfirmed 409): not retried
DEFERRED = "deferred"  # only 429/503 or no connection: certainly not applied, try at the next sync
IN_DOUBT = "in_doubt"  # retries ran out after an attempt that may have been applied (5xx, timeout)
ACKNOWLEDGED = "acknowledged"  # per-SKU view of applied / already_applied / partial
_ACKNOWLEDGED_STATUSES = frozenset({APPLIED, ALREADY_APPLIED, PARTIAL})


# One price in a push (docs/architecture.md §7); price is the exact decimal string, never a float.
ENTRY_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "price": pl.String(),
    "currency": pl.String(),
    "available": pl.Boolean(),
    "supplier": pl.String(),
    "version": pl.Int64(),
}

_ENTRY_POLARS_SCHEMA = pl.Schema(ENTRY_SCHEMA)

# What a storefront shows now, per SKU (read back for reconciliation); version null when unknown.
LIVE_SCHEMA: dict[str, pl.DataType] = {
    "sku": pl.String(),
    "price": MONEY,
    "currency": pl.String(),
    "available": pl.Boolean(),
    "supplier": pl.String(),
    "version": pl.Int64(),
}


def conform_entries(entries: pl.DataFrame) -> pl.DataFrame:
    """Entries with exactly the ENTRY_SCHEMA columns, order and types."""
    if entries.schema == _ENTRY_POLARS_SCHEMA:
        return entries
    return entries.select([pl.col(name).cast(dtype) for name, dtype in ENTRY_SCHEMA.items()])


def encode_body(batch: str, entries: pl.DataFrame) -> bytes:
    """The request body {"batch", "prices": [...]}: compact JSON, fields in ENTRY_SCHEMA order.

    Equal content gives equal bytes (the serializer is deterministic for fixed columns and types).
    """
    prices = conform_entries(entries).write_json()
    return b'{"batch":' + json.dumps(batch).encode() + b',"prices":' + prices.encode() + b"}"


def key_of_body(body: bytes) -> str:
    """The Idempotency-Key of a body: the first 40 hex digits of its SHA-256."""
    return hashlib.sha256(body).hexdigest()[:40]


@dataclass(frozen=True)
class PushChunk:
    """One push request: its entries, the exact body and the Idempotency-Key derived from it.

    `sent_before` marks a chunk resent from the push journal: an earlier sync journaled and sent it,
    so the storefront may have applied it, and a 409 confirming its key is "already applied".
    """

    batch: str
    entries: pl.DataFrame
    body: bytes
    key: str
    sent_before: bool = False

    @classmethod
    def build(
        cls, batch: str, entries: pl.DataFrame, key: str | None = None, *, sent_before: bool = False
    ) -> PushChunk:
        """Encode the entries; `key` is given when resending a chunk whose key was journaled."""
        entries = conform_entries(entries)
        body = encode_body(batch, entries)
        return cls(batch, entries, body, key or key_of_body(body), sent_before)

    @classmethod
    def from_entries(cls, batch: str, entries: Sequence[Mapping[str, Any]]) -> PushChunk:
        """A chunk from entry dicts {sku, price, currency, available, supplier, version}."""
        return cls.build(batch, pl.DataFrame(list(entries), schema=ENTRY_SCHEMA))

    def skus(self) -> list[str]:
        """The chunk's SKUs, in order."""
        return self.entries.get_column("sku").to_list()


@dataclass
class PushOutcome:
    """What happened to one chunk of price entries."""

    key: str
    status: str  # applied | already_applied | partial | refused | deferred | in_doubt
    http_status: int | None
    attempts: int
    error: str | None = None
    # SKUs whose fate differs from the chunk's status: sku -> (status, error).
    per_sku: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def acknowledged(self) -> bool:
        """Whether the storefront confirmed the chunk (possibly minus the SKUs in per_sku)."""
        return self.status in _ACKNOWLEDGED_STATUSES

    def sku_status(self, sku: str) -> tuple[str, str | None]:
        """One SKU's fate: ("acknowledged", None) or (refused | deferred | in_doubt, error)."""
        if sku in self.per_sku:
            return self.per_sku[sku]
        if self.acknowledged:
            return ACKNOWLEDGED, None
        return self.status, self.error


@dataclass
class PushStats:
    """Counters of a sync's requests, for materialization metadata."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    throttle_wait_seconds: float = 0.0
    duplicates_avoided: int = 0
    outcomes: list[PushOutcome] = field(default_factory=list)


class StorefrontPusher(Protocol):
    """An open connection to the storefront that applies one chunk of price entries per call."""

    adapter: str

    def push_prices(self, chunk: PushChunk, *, stats: PushStats) -> PushOutcome:
        """Push one chunk; never raises for storefront or transport errors (they are in the outcome)."""
        ...


def resolve_adapter(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The push adapter: the explicit value, else $STOREFRONT_ADAPTER, else "webhook"."""
    env = os.environ if environ is None else environ
    value = (explicit or env.get(ADAPTER_ENV) or "webhook").strip().lower()
    if value not in ADAPTERS:
        source = "storefront resource push_adapter" if explicit else ADAPTER_ENV
        raise ConfigError(f"{source}: unknown storefront adapter {value!r} (expected one of {ADAPTERS})")
    return value


def idempotency_key(batch: str, entries: Sequence[Mapping[str, Any]]) -> str:
    """Hash of a push's content: the same content always gets the same key, across retries and runs."""
    return PushChunk.from_entries(batch, entries).key


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Signature header value: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def confirmed_key(response: httpx.Response) -> str | None:
    """The Idempotency-Key a 409 body says the storefront applied earlier, or None if it names none.

    The contract (docs/storefront.md): `{"status": "already_applied", "idempotency_key": "<key>"}`.
    """
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") != "already_applied":
        return None
    key = body.get("idempotency_key")
    return key if isinstance(key, str) else None


def conflict_error(chunk: PushChunk, response: httpx.Response) -> str:
    """Why a 409 is not taken as "already applied", with the storefront's body as the reason."""
    named = confirmed_key(response)
    body = response.text[:300] or "<empty body>"
    if named is None:
        why = "does not confirm the Idempotency-Key sent"
    elif named != chunk.key:
        why = f"confirms another Idempotency-Key ({named[:12]}...)"
    else:
        why = "confirms a key never sent before (not journaled by an earlier sync)"
    return f"storefront answered 409 for batch {chunk.batch} but {why}: {body}"


class WebhookPusher:
    """The signed webhook of docs/architecture.md §7 over one open HTTP connection pool."""

    adapter = "webhook"

    def __init__(self, storefront: Storefront, client: httpx.Client, sleep: Callable[[float], None]) -> None:
        self._storefront = storefront
        self._client = client
        self._sleep = sleep

    def push_prices(self, chunk: PushChunk, *, stats: PushStats) -> PushOutcome:
        """POST one chunk, signed, with its content-derived Idempotency-Key; retries: docs/storefront.md."""
        outcome = self._push(chunk, stats)
        stats.outcomes.append(outcome)
        return outcome

    def _push(self, chunk: PushChunk, stats: PushStats) -> PushOutcome:
        config = self._storefront
        # Once an attempt may have reached the storefront, giving up leaves the chunk in doubt.
        sent = _Attempts()

        def count_retry(_: RetryCallState) -> None:
            stats.retries += 1

        retrier = retrying_for(config, sleep=self._sleep, before_sleep=count_retry)
        try:
            for attempt in retrier:
                with attempt:
                    return self._attempt(chunk, stats, attempt.retry_state.attempt_number, sent)
        except RetryableError as exc:
            status = IN_DOUBT if sent.maybe_applied else DEFERRED
            error = f"{exc} after {config.max_attempts} attempts"
            return PushOutcome(chunk.key, status, exc.status, config.max_attempts, error)
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _attempt(self, chunk: PushChunk, stats: PushStats, attempt: int, sent: _Attempts) -> PushOutcome:
        """One signed POST: its outcome, or RetryableError for an answer worth another attempt."""
        config = self._storefront
        body, key = chunk.body, chunk.key
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            # Signed at each attempt: the timestamp must be fresh for the receiver's tolerance.
            "X-Signature": sign(config.webhook_secret, body, int(time.time())),
        }
        stats.requests += 1
        try:
            response = self._client.post("/prices", content=body, headers=headers)
        except httpx.ConnectError as exc:
            raise RetryableError(f"{type(exc).__name__}: storefront not reachable") from None
        except httpx.TransportError as exc:
            sent.maybe_applied = True
            raise RetryableError(f"{type(exc).__name__} talking to the storefront") from None
        status = response.status_code
        if 200 <= status < 300:
            return PushOutcome(key, APPLIED, status, attempt)
        if status == 409:
            # Already applied only if the body names this exact key, and the storefront can know it:
            # the journal sent it in an earlier sync, or an earlier attempt of this request may have
            # got through. Any other 409 (a conflict, a proxy) is a refusal.
            may_be_known = chunk.sent_before or sent.maybe_applied
            if may_be_known and confirmed_key(response) == key:
                stats.duplicates_avoided += 1
                return PushOutcome(key, ALREADY_APPLIED, status, attempt)
            return PushOutcome(key, REFUSED, status, attempt, conflict_error(chunk, response))
        if status in (429, 503):
            stats.throttled += 1
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise RetryableError(f"storefront answered {status}", status=status, retry_after=retry_after)
        if 400 <= status < 500:
            error = f"storefront refused batch {chunk.batch}: HTTP {status} {response.text[:200]}"
            return PushOutcome(key, REFUSED, status, attempt, error)
        sent.maybe_applied = True
        raise RetryableError(f"storefront answered {status}", status=status)


@dataclass
class _Attempts:
    """What the attempts of one push have learnt: whether one may have reached the storefront."""

    maybe_applied: bool = False


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
    push_adapter: str | None = Field(
        default=None,
        description="webhook | shopify; unset: $STOREFRONT_ADAPTER when the run starts, else webhook",
    )

    @classmethod
    def from_env(cls) -> Storefront:
        """The storefront configured from STOREFRONT_URL and STOREFRONT_WEBHOOK_SECRET."""
        return cls(url=EnvVar("STOREFRONT_URL"), webhook_secret=EnvVar("STOREFRONT_WEBHOOK_SECRET"))

    def resolved_adapter(self) -> str:
        """How prices reach the storefront in this run: "webhook" or "shopify"."""
        return resolve_adapter(self.push_adapter)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout_seconds)

    def _read_listing(self, path: str, what: str, max_pages: int) -> list[dict[str, Any]]:
        """Every item of a paginated listing ({items, next_page, total}), never a silent part of it.

        An empty page with a next page goes on; a listing that ends with fewer items than its
        advertised `total` is an error, as is one longer than max_pages or one that loops back.
        """
        rows: list[dict[str, Any]] = []
        page = 1
        total: int | None = None
        with self._client() as client:
            for _ in range(max_pages):
                response = client.get(path, params={"page": page, "per_page": self.catalog_page_size})
                response.raise_for_status()
                body = response.json()
                rows.extend(body["items"])
                if isinstance(body.get("total"), int):
                    total = body["total"]
                next_page = body.get("next_page")
                if next_page is None:
                    break
                if next_page <= page:
                    raise RuntimeError(f"storefront {what}: page {page} points back to page {next_page}")
                page = next_page
            else:
                raise RuntimeError(f"storefront {what}: more than {max_pages} pages")
        if total is not None and len(rows) < total:
            raise RuntimeError(
                f"storefront {what}: the listing ended after {len(rows)} of the {total} items it "
                f"advertises ({page} pages): a partial listing is not taken as complete"
            )
        return rows

    def fetch_catalog(self, max_pages: int = 10_000) -> pl.DataFrame:
        """Read the whole catalog through its paginated endpoint (bounded by max_pages)."""
        rows = self._read_listing("/catalog", "catalog", max_pages)
        frame = pl.DataFrame(rows, schema_overrides=dict(CATALOG_SCHEMA))
        return conform_filling(frame, CATALOG_SCHEMA)

    def fetch_live_prices(self, max_pages: int = 10_000) -> pl.DataFrame:
        """What the storefront shows now per SKU (`GET /prices`, paginated), as LIVE_SCHEMA."""
        rows = self._read_listing("/prices", "live prices", max_pages)
        frame = pl.DataFrame(
            rows,
            schema={**dict.fromkeys(LIVE_SCHEMA, pl.String()), "available": pl.Boolean, "version": pl.Int64},
        )
        return frame.select([pl.col(name).cast(dtype) for name, dtype in LIVE_SCHEMA.items()])

    @contextmanager
    def open_pusher(self, *, sleep: Callable[[float], None] = time.sleep) -> Iterator[WebhookPusher]:
        """A webhook pusher sharing one connection pool for a whole sync."""
        with self._client() as client:
            yield WebhookPusher(self, client, sleep)
