"""One supplier's HTTP session: auth, rate limit with burst, bounded parallelism, retries, statistics."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx
from tenacity import RetryCallState

from resources.config import SupplierEntry
from resources.http_retry import async_retrying, parse_retry_after
from resources.suppliers.auth import build_auth
from resources.suppliers.errors import RetryableError, SupplierError

NOT_FOUND = object()  # returned by request_json for a 404 the caller allowed


@dataclass
class FetchStats:
    """What fetching one supplier cost: requests, retries, throttling, latency and duration."""

    requests: int = 0  # data requests sent, retries included
    retries: int = 0
    throttled: int = 0  # 429 responses
    server_errors: int = 0  # 5xx responses
    timeouts: int = 0
    connection_errors: int = 0
    malformed: int = 0  # 2xx answers whose body was not the JSON expected
    token_requests: int = 0
    pages: int = 0
    not_found: int = 0
    unmapped: int = 0  # SKUs with no supplier id (ASIN) to ask for
    records: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    duration_s: float = 0.0

    def latency_ms(self, quantile: float) -> float:
        """Latency quantile over every attempt (nearest rank), 0 when nothing was sent."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(quantile * len(ordered)))
        return ordered[rank - 1]

    def as_metadata(self) -> dict[str, float | int]:
        """Numeric values for Dagster metadata (plottable in the UI)."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
            "server_errors": self.server_errors,
            "timeouts": self.timeouts,
            "token_requests": self.token_requests,
            "pages": self.pages,
            "not_found": self.not_found,
            "unmapped": self.unmapped,
            "latency_p50_ms": round(self.latency_ms(0.5), 2),
            "latency_p95_ms": round(self.latency_ms(0.95), 2),
            "duration_s": round(self.duration_s, 3),
        }


class RequestPacer:
    """Paces one supplier's requests below its rate limit, as the supplier's server counts them.

    A generic cell-rate algorithm (GCRA: one request per `interval`, `burst` at once) over the
    latest possible moment the server saw each request, with what aiolimiter (used before, and
    measured drawing a 429 in each of two bench runs at 39-40 of 40 req/s) does not do:
    - a margin: the pace is `rate x (1 - margin)`, so scheduling jitter cannot push arrivals over
      the server's window;
    - a request counts at its send until its answer comes, then at its answer: the server saw it at
      the latest then. After a stall (a busy server processing queued requests at once), the answers
      come together and the pacer waits until the server has refilled, instead of sending into an
      empty window because the *sends* were evenly spaced;
    - a 429 it did draw slows it down (x1.25 per 429, at most 2x, recovering 1 % per answer) and
      pauses it for the server's Retry-After: it follows the server's window.
    """

    _REMEMBERED = 64  # requests kept for the model; far more than one burst

    def __init__(
        self,
        requests_per_second: float,
        burst: int,
        margin: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / (requests_per_second * (1.0 - margin))
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        # Per recent request, a one-element list: when the server saw it at the latest.
        self._seen: deque[list[float]] = deque(maxlen=self._REMEMBERED)
        self._resume_at = 0.0
        self.slowdown = 1.0
        self._lock = asyncio.Lock()

    @property
    def interval(self) -> float:
        """Seconds between requests at the current pace."""
        return self._interval * self.slowdown

    def next_allowed(self) -> float:
        """The earliest moment one more request conforms to the server's window (worst case)."""
        interval = self.interval
        tat = 0.0
        for (seen,) in sorted(self._seen):
            tat = max(tat, seen) + interval
        return max(tat - (self._burst - 1) * interval, self._resume_at)

    async def acquire(self) -> list[float]:
        """Wait until one more request fits in the window; the returned token goes to `answered`."""
        async with self._lock:
            while True:
                now = self._clock()
                ready = self.next_allowed()
                if now >= ready:
                    break
                await self._sleep(ready - now)
            token = [now]
            self._seen.append(token)
            return token

    def answered(self, token: list[float]) -> None:
        """The request's answer came: the server saw it at the latest now."""
        token[0] = self._clock()
        self.slowdown = max(1.0, self.slowdown - 0.01)

    def throttled(self, retry_after: float | None) -> None:
        """A 429: slow down, and send nothing before the server's Retry-After has passed."""
        self.slowdown = min(2.0, self.slowdown * 1.25)
        self.pause(retry_after if retry_after is not None else self.interval)

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (a Retry-After), then resume at the current pace."""
        self._resume_at = max(self._resume_at, self._clock() + seconds)


def _loads(content: bytes) -> Any:
    # Decimal keeps JSON number prices (Oxylabs style) exact; floats never touch money.
    return json.loads(content, parse_float=Decimal)


class SupplierHttp:
    """An async HTTP session for one supplier, used as `async with SupplierHttp(entry) as http`."""

    def __init__(
        self,
        entry: SupplierEntry,
        *,
        environ: Mapping[str, str] | None = None,
        stats: FetchStats | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.entry = entry
        self.stats = stats or FetchStats()
        self._environ = environ
        self._transport = transport
        limits = entry.rate_limit
        self.pacer = RequestPacer(limits.requests_per_second, limits.burst, limits.margin)
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._client: httpx.AsyncClient | None = None
        self._auth: httpx.Auth | None = None

    async def __aenter__(self) -> SupplierHttp:
        base_url = self.entry.resolved_base_url(dict(self._environ) if self._environ is not None else None)
        in_flight = self.entry.rate_limit.max_in_flight
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(self.entry.timeout_seconds),
            limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
            transport=self._transport,
            follow_redirects=False,
        )
        try:
            self._auth = build_auth(
                self.entry.auth,
                supplier=self.entry.id,
                base_url=base_url,
                client=self._client,
                environ=self._environ,
                on_token_request=self._count_token_request,
            )
        except BaseException:
            await self._client.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()

    def _count_token_request(self) -> None:
        self.stats.token_requests += 1

    def _error(
        self, message: str, *, endpoint: str, status: int | None, attempts: int | None = None
    ) -> SupplierError:
        return SupplierError(
            f"supplier {self.entry.id!r}: {endpoint}: {message}",
            supplier=self.entry.id,
            endpoint=endpoint,
            status=status,
            attempts=attempts,
        )

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        allow_not_found: bool = False,
    ) -> Any:
        """Send one request with rate limit, bounded retries and auth; the decoded JSON body.

        Returns NOT_FOUND for a 404 when allow_not_found. Raises SupplierError naming the supplier,
        endpoint and status for a non-retryable answer or when retries run out.
        """
        assert self._client is not None, "use SupplierHttp as an async context manager"
        retry = self.entry.retry
        endpoint = f"{method} {self._client.base_url.path.rstrip('/')}/{path.lstrip('/')}"
        # The server's Retry-After is honoured uncapped here: the pacer also follows it (docs/suppliers.md).
        retrying = async_retrying(
            max_attempts=retry.max_attempts,
            initial=retry.backoff_initial_seconds,
            maximum=retry.backoff_max_seconds,
            before_sleep=self._count_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(
                        method,
                        path,
                        endpoint,
                        params=params,
                        json_body=json_body,
                        allow_not_found=allow_not_found,
                    )
        except RetryableError as exc:
            raise self._error(
                f"failed after {retry.max_attempts} attempts: {exc}",
                endpoint=endpoint,
                status=exc.status,
                attempts=retry.max_attempts,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _count_retry(self, retry_state: RetryCallState) -> None:
        self.stats.retries += 1

    async def _attempt(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None,
        json_body: Any,
        allow_not_found: bool,
    ) -> Any:
        assert self._client is not None
        async with self._slots:
            # One pacer for the whole supplier: a 429/503 with Retry-After pauses every request.
            token = await self.pacer.acquire()
            self.stats.requests += 1
            started = time.perf_counter()
            try:
                response = await self._client.request(
                    method, path, params=params, json=json_body, auth=self._auth or httpx.USE_CLIENT_DEFAULT
                )
            except httpx.TimeoutException as exc:
                self.stats.timeouts += 1
                raise RetryableError(f"timeout after {self.entry.timeout_seconds}s") from exc
            except httpx.TransportError as exc:
                self.stats.connection_errors += 1
                raise RetryableError(f"connection error ({type(exc).__name__})") from exc
            finally:
                self.pacer.answered(token)
                self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        return self._interpret(response, endpoint, allow_not_found=allow_not_found)

    def _interpret(self, response: httpx.Response, endpoint: str, *, allow_not_found: bool) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return _loads(response.content)
            except ValueError as exc:
                self.stats.malformed += 1
                raise RetryableError(f"malformed JSON in HTTP {status} response", status=status) from exc
        if status == 404 and allow_not_found:
            return NOT_FOUND
        if status in (429, 503):
            if status == 429:
                self.stats.throttled += 1
            else:
                self.stats.server_errors += 1
            wait = parse_retry_after(response.headers.get("Retry-After"))
            limit = self.entry.retry.max_retry_after_seconds
            if wait is not None and wait > limit:
                raise self._error(
                    f"HTTP {status} asks to retry after {wait:.0f}s, "
                    f"more than max_retry_after_seconds={limit:g}",
                    endpoint=endpoint,
                    status=status,
                )
            if status == 429:
                self.pacer.throttled(wait)
            elif wait is not None:
                self.pacer.pause(wait)  # a 503 is an outage, not a sign of going too fast
            raise RetryableError(f"HTTP {status}", status=status, retry_after=wait)
        if status >= 500 or status == 408:
            self.stats.server_errors += status >= 500
            raise RetryableError(f"HTTP {status}", status=status)
        hint = ""
        if status in (401, 403) and self.entry.auth.kind != "none":
            hint = f" (credentials from {', '.join(self.entry.auth.secret_env_names())})"
        raise self._error(f"HTTP {status}{hint}", endpoint=endpoint, status=status)
