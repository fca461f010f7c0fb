"""Shopify adapter: Admin GraphQL `productVariantsBulkUpdate` per product, paced on the cost bucket."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import httpx
import polars as pl
from dagster import ConfigurableResource
from pydantic import Field
from tenacity import RetryCallState

from resources.config import ConfigError
from resources.http_retry import RetryableError, parse_retry_after, retrying_for
from resources.secrets import read_secret
from resources.storefront import (
    APPLIED,
    DEFERRED,
    IN_DOUBT,
    LIVE_SCHEMA,
    PARTIAL,
    REFUSED,
    PushChunk,
    PushOutcome,
    PushStats,
)

DEFAULT_API_VERSION = "2025-07"
# What Shopify charges for one mutation field; the estimate before the first response tells us more.
MUTATION_COST = 10
SUPPLIER_METAFIELD = {"namespace": "pricing", "key": "supplier", "type": "single_line_text_field"}
_VARIANT_INDEX = re.compile(r"^\d+$")
# Reads for reconciliation: what every variant shows now, page by page, and how many there are.
LIVE_VARIANTS_QUERY = """query LiveVariants($first: Int!, $after: String) {
  productVariants(first: $first, after: $after) {
    nodes { id sku price inventoryPolicy metafield(namespace: "pricing", key: "supplier") { value } }
    pageInfo { hasNextPage endCursor }
  }
}"""
VARIANT_COUNT_QUERY = "query VariantCount { productVariantsCount { count precision } }"

CENT = Decimal("0.01")


@dataclass(frozen=True)
class VariantRef:
    """Where one SKU lives in Shopify: its product and variant GIDs."""

    product_id: str
    variant_id: str


def variants_from_catalog(catalog: pl.DataFrame) -> dict[str, VariantRef]:
    """SKU -> Shopify product and variant, from the catalog's product_id / variant_id columns."""
    rows = catalog.filter(pl.col("product_id").is_not_null() & pl.col("variant_id").is_not_null())
    return {
        sku: VariantRef(product, variant)
        for sku, product, variant in rows.select("sku", "product_id", "variant_id").iter_rows()
    }


def variant_input(entry: Mapping[str, Any], variant_id: str) -> dict[str, Any]:
    """One ProductVariantsBulkInput: price, availability as inventory policy, routed supplier metafield."""
    item: dict[str, Any] = {
        "id": variant_id,
        # Digital goods are sold without stock tracking: CONTINUE sells, DENY stops sales.
        "inventoryPolicy": "CONTINUE" if entry["available"] else "DENY",
        "metafields": [{**SUPPLIER_METAFIELD, "value": entry.get("supplier") or "none"}],
    }
    if entry.get("price") is not None:
        item["price"] = entry["price"]
    return item


@cache
def bulk_update_document(products: int) -> str:
    """A mutation with one aliased productVariantsBulkUpdate per product (p0, p1, ...)."""
    params = ", ".join(f"$p{i}: ID!, $v{i}: [ProductVariantsBulkInput!]!" for i in range(products))
    fields = "\n".join(
        f"  p{i}: productVariantsBulkUpdate(productId: $p{i}, variants: $v{i}, allowPartialUpdates: true) "
        "{ productVariants { id price inventoryPolicy } userErrors { field message code } }"
        for i in range(products)
    )
    return f"mutation PushPrices({params}) {{\n{fields}\n}}"


@dataclass
class CostBucket:
    """Our model of Shopify's leaky bucket, refreshed from every response's throttleStatus."""

    maximum: float | None = None
    available: float | None = None
    restore_rate: float | None = None
    observed_at: float = 0.0

    def update(self, throttle_status: Mapping[str, Any] | None, now: float) -> None:
        """Take the server's view of the bucket after a response."""
        if not throttle_status:
            return
        self.maximum = float(throttle_status.get("maximumAvailable") or self.maximum or 0) or None
        self.available = float(throttle_status.get("currentlyAvailable") or 0)
        self.restore_rate = float(throttle_status.get("restoreRate") or 0) or None
        self.observed_at = now

    def estimate(self, now: float) -> float | None:
        """Points available now, counting what leaked back since the last response."""
        if self.available is None:
            return None
        restored = (self.restore_rate or 0) * max(0.0, now - self.observed_at)
        estimate = self.available + restored
        return min(estimate, self.maximum) if self.maximum else estimate

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds to wait before a request of this cost fits in the bucket (0 when unknown)."""
        available = self.estimate(now)
        if available is None or available >= cost or not self.restore_rate:
            return 0.0
        return (cost - available) / self.restore_rate

    def spend(self, cost: float, now: float) -> None:
        """Account for a request sent before its response tells us the real level."""
        available = self.estimate(now)
        if available is not None:
            self.available, self.observed_at = available - cost, now


class ShopifyPusher:
    """Pushes chunks as productVariantsBulkUpdate mutations, several products per request."""

    adapter = "shopify"

    def __init__(
        self,
        shop: ShopifyStorefront,
        client: httpx.Client,
        variants: Mapping[str, VariantRef],
        sleep: Callable[[float], None],
    ) -> None:
        self._shop = shop
        self._client = client
        self._variants = variants
        self._sleep = sleep
        self.bucket = CostBucket()
        self._cap: int | None = None

    def push_prices(self, chunk: PushChunk, *, stats: PushStats) -> PushOutcome:
        """Update the chunk's variants; userErrors and unknown SKUs come back per SKU."""
        key = chunk.key
        entries = chunk.entries.to_dicts()
        per_sku: dict[str, tuple[str, str]] = {}
        products: dict[str, list[Mapping[str, Any]]] = {}
        for entry in entries:
            ref = self._variants.get(entry["sku"])
            if ref is None:
                per_sku[entry["sku"]] = (REFUSED, "SKU has no Shopify variant in the catalog")
            else:
                # The variant id travels with the entry so the answer can be checked against it.
                products.setdefault(ref.product_id, []).append({**entry, "_variant_id": ref.variant_id})
        queue = list(products.items())
        attempts = 0
        last_status: int | None = None
        while queue:
            size = self._group_size()
            group, queue = queue[:size], queue[size:]
            sent = self._send(group, stats)
            if sent is None:
                # More than the bucket can ever hold: retry the same products in smaller requests.
                self._cap = max(1, min(len(group) // 2, self._group_size()))
                queue = group + queue
                continue
            results, request_attempts, last_status = sent
            attempts += request_attempts
            per_sku.update(results)
        outcome = _summarize(key, entries, per_sku, attempts, last_status)
        stats.outcomes.append(outcome)
        return outcome

    def _group_size(self) -> int:
        size = min(self._shop.products_per_request, self._cap or self._shop.products_per_request)
        if self.bucket.maximum:
            # A single query may never cost more than the whole bucket holds.
            size = min(size, max(1, int(self.bucket.maximum // MUTATION_COST)))
        return size

    def _send(
        self, group: list[tuple[str, list[Mapping[str, Any]]]], stats: PushStats
    ) -> tuple[dict[str, tuple[str, str]], int, int | None] | None:
        """One GraphQL request for a group of products: per-SKU failures, requests sent, last HTTP status.

        None when the request costs more than the whole bucket (MAX_COST_EXCEEDED) and can be split.
        """
        shop = self._shop
        skus = [entry["sku"] for _, items in group for entry in items]
        variables: dict[str, Any] = {}
        for i, (product_id, items) in enumerate(group):
            variables[f"p{i}"] = product_id
            variables[f"v{i}"] = [variant_input(e, self._variants[e["sku"]].variant_id) for e in items]
        payload = {"query": bulk_update_document(len(group)), "variables": variables}
        paced = _PacedRequests(shop, self._client, self.bucket, self._sleep, stats)

        def count_retry(_: RetryCallState) -> None:
            stats.retries += 1

        try:
            for attempt in retrying_for(shop, sleep=self._sleep, before_sleep=count_retry):
                with attempt:
                    body = paced.send(payload, MUTATION_COST * len(group))
        except RetryableError as exc:
            status = IN_DOUBT if paced.maybe_applied else DEFERRED
            error = f"{exc} after {paced.requests} attempts"
            return dict.fromkeys(skus, (status, error)), paced.requests, paced.last_status
        except _Refused as exc:
            return dict.fromkeys(skus, (REFUSED, str(exc))), paced.requests, paced.last_status
        codes = _error_codes(body)
        if "MAX_COST_EXCEEDED" in codes and len(group) > 1:
            return None
        if body.get("data"):
            return _confirmations(group, body), paced.requests, paced.last_status
        message = f"Shopify refused: {_error_messages(body)}"
        return dict.fromkeys(skus, (REFUSED, message)), paced.requests, paced.last_status


def _error_codes(body: Mapping[str, Any]) -> set[str]:
    return {
        str((error.get("extensions") or {}).get("code", ""))
        for error in body.get("errors") or []
        if isinstance(error, dict)
    }


def _error_messages(body: Mapping[str, Any]) -> str:
    errors = body.get("errors")
    if isinstance(errors, str):
        return errors[:200]
    return "; ".join(str(e.get("message", e)) for e in errors or [] if isinstance(e, dict))[:300] or "no data"


def _confirms(entry: Mapping[str, Any], returned: Mapping[str, Any] | None) -> bool:
    """Whether the variant Shopify returned shows the change: its availability policy and its price.

    Shopify keeps prices to the currency's minor unit, so a price within one cent of what was sent
    confirms it (a change smaller than a cent is not a change anyone could see).
    """
    if returned is None:
        return False
    if returned.get("inventoryPolicy") != ("CONTINUE" if entry["available"] else "DENY"):
        return False
    if entry.get("price") is None:
        return True
    try:
        shown = Decimal(str(returned.get("price")))
    except (InvalidOperation, ValueError):
        return False
    return shown.is_finite() and abs(shown - Decimal(entry["price"])) < CENT


def _confirmations(
    group: list[tuple[str, list[Mapping[str, Any]]]], body: Mapping[str, Any]
) -> dict[str, tuple[str, str]]:
    """Per-SKU failures of a mutation answer: userErrors are refusals, and a variant the answer does
    not show with the values sent is in doubt (no error is not the same as applied)."""
    failed = _user_errors(group, body)
    data = body.get("data") or {}
    for i, (_, items) in enumerate(group):
        result = data.get(f"p{i}")
        if result is None:
            continue  # _user_errors ruled on it
        variants = result.get("productVariants") or []
        shown = {v.get("id"): v for v in variants if isinstance(v, dict)}
        for entry in items:
            if entry["sku"] in failed:
                continue
            variant_id = entry["_variant_id"]
            if not _confirms(entry, shown.get(variant_id)):
                failed[entry["sku"]] = (
                    IN_DOUBT,
                    f"Shopify answered without errors but did not confirm variant {variant_id} "
                    f"(price {entry.get('price')}, available {entry['available']})",
                )
    return failed


def _user_errors(
    group: list[tuple[str, list[Mapping[str, Any]]]], body: Mapping[str, Any]
) -> dict[str, tuple[str, str]]:
    """Map each alias's userErrors (field ["variants", "<i>", ...]) back to SKUs."""
    data = body.get("data") or {}
    failed: dict[str, tuple[str, str]] = {}
    for i, (_, items) in enumerate(group):
        result = data.get(f"p{i}")
        if result is None:
            # A null result with GraphQL errors was refused; with none, nobody says what happened.
            if body.get("errors"):
                message = _error_messages(body)
                failed.update({e["sku"]: (REFUSED, f"Shopify: {message}") for e in items})
            else:
                reason = f"Shopify returned no result for product alias p{i}"
                failed.update({e["sku"]: (IN_DOUBT, reason) for e in items})
            continue
        for error in result.get("userErrors") or []:
            path = error.get("field") or []
            reason = f"Shopify userError {error.get('code') or ''}: {error.get('message', '')}".strip()
            if len(path) >= 2 and path[0] == "variants" and _VARIANT_INDEX.match(str(path[1])):
                index = int(path[1])
                if index < len(items):
                    failed[items[index]["sku"]] = (REFUSED, reason)
                    continue
            # An error not tied to one variant (e.g. productId) fails the whole product.
            failed.update({e["sku"]: (REFUSED, reason) for e in items if e["sku"] not in failed})
    return failed


def _summarize(
    key: str,
    entries: Sequence[Mapping[str, Any]],
    per_sku: dict[str, tuple[str, str]],
    attempts: int,
    http_status: int | None,
) -> PushOutcome:
    """Fold per-SKU results into one outcome whose status describes the chunk."""
    if not per_sku:
        return PushOutcome(key, APPLIED, http_status, attempts)
    statuses = {status for status, _ in per_sku.values()}
    first_error = next(iter(per_sku.values()))[1]
    if len(per_sku) < len(entries):
        return PushOutcome(key, PARTIAL, http_status, attempts, first_error, per_sku)
    # Nothing went through: the chunk takes the most uncertain status; each SKU keeps its own reason.
    worst = IN_DOUBT if IN_DOUBT in statuses else DEFERRED if DEFERRED in statuses else REFUSED
    return PushOutcome(key, worst, http_status, attempts, first_error, per_sku)


class _Refused(Exception):
    """Shopify refused a request for good (a 4xx other than 429): not worth another attempt."""


class _PacedRequests:
    """One GraphQL request's attempts: paced on the cost bucket, THROTTLED answers waited out (bounded).

    `send` is one attempt for the shared retrier: it returns the 200 body (which may still carry GraphQL
    errors for the caller to judge), raises RetryableError for what another attempt may fix (transport
    errors, 429, 5xx, INTERNAL_SERVER_ERROR) and _Refused for a 4xx. THROTTLED is not a failure: the
    bucket is empty, so it waits until the bucket holds the request's cost and sends again, at most
    `max_throttle_waits` times over all attempts.
    """

    def __init__(
        self,
        shop: ShopifyStorefront,
        client: httpx.Client,
        bucket: CostBucket,
        sleep: Callable[[float], None],
        stats: PushStats | None,
    ) -> None:
        self._shop = shop
        self._client = client
        self._bucket = bucket
        self._sleep = sleep
        self._stats = stats
        self.requests = 0
        self.throttled = 0
        self.last_status: int | None = None
        # Once a request may have reached Shopify, giving up leaves the update in doubt.
        self.maybe_applied = False

    def send(self, payload: Mapping[str, Any], cost: float) -> dict[str, Any]:
        """Send until an answer that is not THROTTLED; its body (see the class docstring for errors)."""
        stats = self._stats
        while True:
            pause = self._bucket.wait_for(cost, time.monotonic())
            if pause > 0:
                if stats is not None:
                    stats.throttle_wait_seconds += pause
                self._sleep(pause)
            self.requests += 1
            if stats is not None:
                stats.requests += 1
            self._bucket.spend(cost, time.monotonic())
            try:
                response = self._client.post(self._shop.graphql_path(), json=payload)
            except httpx.ConnectError as exc:
                self.last_status = None
                raise RetryableError(f"{type(exc).__name__}: Shopify not reachable") from None
            except httpx.TransportError as exc:
                self.last_status = None
                self.maybe_applied = True
                raise RetryableError(f"{type(exc).__name__} talking to Shopify") from None
            status = self.last_status = response.status_code
            if status in (429, 503):
                if stats is not None:
                    stats.throttled += 1
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                raise RetryableError(f"Shopify answered {status}", status=status, retry_after=retry_after)
            if 400 <= status < 500:
                raise _Refused(f"Shopify refused the request: HTTP {status} {response.text[:200]}")
            if status != 200:
                self.maybe_applied = True
                raise RetryableError(f"Shopify answered {status}", status=status)
            body = response.json()
            cost_info = (body.get("extensions") or {}).get("cost") or {}
            self._bucket.update(cost_info.get("throttleStatus"), time.monotonic())
            codes = _error_codes(body)
            if "THROTTLED" in codes and self.throttled < self._shop.max_throttle_waits:
                self.throttled += 1
                if stats is not None:
                    stats.throttled += 1
                    stats.retries += 1
                requested = float(cost_info.get("requestedQueryCost") or cost)
                pause = max(self._bucket.wait_for(requested, time.monotonic()), 0.05)
                if stats is not None:
                    stats.throttle_wait_seconds += pause
                self._sleep(pause)
                continue
            if "THROTTLED" in codes:
                raise RetryableError(f"Shopify answered THROTTLED {self.throttled} times", status=status)
            if "INTERNAL_SERVER_ERROR" in codes:
                self.maybe_applied = True
                raise RetryableError(f"Shopify internal error: {_error_messages(body)}", status=status)
            return body


class ShopifyReadError(RuntimeError):
    """A read of the shop's state that could not be completed (never a silent partial result)."""


class _GraphQLReader:
    """Sends read queries, paced on the cost bucket; THROTTLED waits, 429/503/5xx retry, bounded."""

    def __init__(self, shop: ShopifyStorefront, client: httpx.Client, sleep: Callable[[float], None]) -> None:
        self._shop = shop
        self._client = client
        self._sleep = sleep
        self.bucket = CostBucket()
        self.requests = 0

    def query(self, document: str, variables: Mapping[str, Any], cost: float) -> dict[str, Any]:
        """The `data` of one query; raises ShopifyReadError when it cannot be had."""
        paced = _PacedRequests(self._shop, self._client, self.bucket, self._sleep, None)
        try:
            for attempt in retrying_for(self._shop, sleep=self._sleep):
                with attempt:
                    body = paced.send({"query": document, "variables": variables}, cost)
        except RetryableError as exc:
            raise ShopifyReadError(f"{exc} after {self._shop.max_attempts} attempts") from None
        except _Refused as exc:
            raise ShopifyReadError(f"Shopify refused the read: {exc}") from None
        finally:
            self.requests += paced.requests
        if body.get("errors") or not body.get("data"):
            raise ShopifyReadError(f"Shopify refused the read: {_error_messages(body)}")
        return body["data"]


class ShopifyStorefront(ConfigurableResource):
    """A Shopify store's Admin GraphQL API; the access token is read from the environment when pushing."""

    shop_url: str | None = Field(
        default=None, description="https://<shop>.myshopify.com; unset: $SHOPIFY_SHOP_URL at push time"
    )
    access_token_env: str = Field(
        default="SHOPIFY_ACCESS_TOKEN", description="name of the env var holding the Admin API token"
    )
    api_version: str = DEFAULT_API_VERSION
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    max_throttle_waits: int = 50
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 5.0
    max_retry_after_seconds: float = 30.0
    products_per_request: int = Field(default=10, ge=1, le=100)
    read_page_size: int = Field(default=250, ge=1, le=250, description="variants per productVariants page")

    def graphql_path(self) -> str:
        """The Admin GraphQL endpoint path for the configured API version."""
        return f"/admin/api/{self.api_version}/graphql.json"

    def _base_url(self) -> str:
        url = self.shop_url or os.environ.get("SHOPIFY_SHOP_URL")
        if not url:
            raise ConfigError("shopify: shop_url is not set and SHOPIFY_SHOP_URL is empty")
        return url.rstrip("/")

    def _token(self) -> str:
        token = read_secret(self.access_token_env)
        if not token:
            raise ConfigError(f"shopify: environment variable {self.access_token_env} is not set")
        return token

    def fetch_live_prices(
        self, max_pages: int = 10_000, *, sleep: Callable[[float], None] = time.sleep
    ) -> pl.DataFrame:
        """What every variant shows now (price, availability, routed supplier) as LIVE_SCHEMA rows.

        Read through the paginated `productVariants` connection, then checked against
        `productVariantsCount`: a listing that ends short of the count is an error, never a partial.
        """
        headers = {"X-Shopify-Access-Token": self._token(), "Content-Type": "application/json"}
        nodes: list[dict[str, Any]] = []
        with httpx.Client(base_url=self._base_url(), headers=headers, timeout=self.timeout_seconds) as client:
            reader = _GraphQLReader(self, client, sleep)
            after: str | None = None
            seen: set[str] = set()
            for _ in range(max_pages):
                variables = {"first": self.read_page_size, "after": after}
                connection = reader.query(LIVE_VARIANTS_QUERY, variables, cost=2 + self.read_page_size)[
                    "productVariants"
                ]
                nodes.extend(connection["nodes"])
                info = connection["pageInfo"]
                if not info["hasNextPage"]:
                    break
                after = info.get("endCursor")
                if not after or after in seen:
                    raise ShopifyReadError(f"productVariants: cursor {after!r} repeated or missing (loop)")
                seen.add(after)
            else:
                raise ShopifyReadError(f"productVariants: more than {max_pages} pages")
            counted = reader.query(VARIANT_COUNT_QUERY, {}, cost=1).get("productVariantsCount") or {}
        if counted.get("precision") == "EXACT" and len(nodes) < int(counted.get("count", 0)):
            raise ShopifyReadError(
                f"productVariants: the listing ended after {len(nodes)} of the {counted['count']} variants "
                "productVariantsCount reports: a partial listing is not taken as complete"
            )
        rows = [
            {
                "sku": node.get("sku"),
                "price": node.get("price"),
                "currency": None,
                "available": node.get("inventoryPolicy") == "CONTINUE",
                "supplier": _supplier_of(node),
                "version": None,
            }
            for node in nodes
            if node.get("sku")
        ]
        frame = pl.DataFrame(
            rows,
            schema={**dict.fromkeys(LIVE_SCHEMA, pl.String()), "available": pl.Boolean, "version": pl.Int64},
        )
        return frame.select([pl.col(name).cast(dtype) for name, dtype in LIVE_SCHEMA.items()])

    @contextmanager
    def open_pusher(
        self, variants: Mapping[str, VariantRef], *, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[ShopifyPusher]:
        """A pusher for one sync, knowing each SKU's product and variant."""
        headers = {"X-Shopify-Access-Token": self._token(), "Content-Type": "application/json"}
        with httpx.Client(base_url=self._base_url(), headers=headers, timeout=self.timeout_seconds) as client:
            yield ShopifyPusher(self, client, variants, sleep)


def _supplier_of(node: Mapping[str, Any]) -> str | None:
    """The routed supplier a variant's metafield shows; "none" (what an unavailable push sets) is None."""
    value = (node.get("metafield") or {}).get("value")
    return None if value in (None, "", "none") else str(value)


__all__ = [
    "CostBucket",
    "ShopifyPusher",
    "ShopifyReadError",
    "ShopifyStorefront",
    "VariantRef",
    "bulk_update_document",
    "variant_input",
    "variants_from_catalog",
]
