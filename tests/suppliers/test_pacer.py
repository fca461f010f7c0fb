"""The supplier request pacer: under the limit with a margin, counting requests the way the server does,
and slowing down after a 429 (issue 13: the limiter drew 429s at 39-40 of 40 req/s)."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest

from resources.config import RateLimitConfig, RetryConfig, SupplierEntry
from resources.suppliers.http import RequestPacer, SupplierHttp


class FakeTime:
    """A clock that only moves when the pacer sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def pacer(fake: FakeTime, rate: float = 40, burst: int = 2, margin: float = 0.05) -> RequestPacer:
    return RequestPacer(rate, burst, margin, clock=fake.clock, sleep=fake.sleep)


def sends(p: RequestPacer, fake: FakeTime, n: int, *, answer: bool = True) -> list[float]:
    """Acquire n times (answering each at once when `answer`); the send times."""

    async def go() -> list[float]:
        times = []
        for _ in range(n):
            token = await p.acquire()
            times.append(fake.now)
            if answer:
                p.answered(token)
        return times

    return asyncio.run(go())


def test_paces_below_the_limit_with_the_margin_after_a_burst():
    fake = FakeTime()
    times = sends(pacer(fake, rate=40, burst=2, margin=0.05), fake, 12)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    interval = 1 / (40 * 0.95)
    assert gaps[0] == 0  # the burst of 2
    assert all(g == pytest.approx(interval) for g in gaps[2:])
    assert (len(times) - 2) / (times[-1] - times[1]) == pytest.approx(38.0)  # never at the limit itself


def test_answers_arriving_together_make_it_wait_until_the_server_refilled():
    """A server that stalled processed the queued requests at once: count them at their answers."""
    fake = FakeTime()
    p = pacer(fake, rate=40, burst=2, margin=0.0)

    async def scenario() -> float:
        tokens = [await p.acquire() for _ in range(4)]  # sent evenly, answered together after a stall
        fake.now += 1.0
        for token in tokens:
            p.answered(token)
        stall_end = fake.now
        await p.acquire()
        return fake.now - stall_end

    waited = asyncio.run(scenario())
    # Four requests seen at once: the window is free again 4 intervals on, minus the burst tolerance.
    assert waited == pytest.approx((4 - 1) / 40)


def test_send_spacing_alone_would_have_sent_at_once_after_the_stall():
    """The same stall with answers counted at send time only (what the old limiter did)."""
    fake = FakeTime()
    p = pacer(fake, rate=40, burst=2, margin=0.0)

    async def scenario() -> float:
        for _ in range(4):
            await p.acquire()  # never answered: counted at its send
        fake.now += 1.0
        start = fake.now
        await p.acquire()
        return fake.now - start

    assert asyncio.run(scenario()) == 0.0


def test_a_429_pauses_for_retry_after_and_slows_down_then_recovers():
    fake = FakeTime()
    p = pacer(fake, rate=40, burst=1, margin=0.0)
    sends(p, fake, 3)
    p.throttled(2.0)
    assert p.slowdown == pytest.approx(1.25)
    paused_at = fake.now
    times = sends(p, fake, 3)
    assert times[0] >= paused_at + 2.0
    assert times[2] - times[1] == pytest.approx(1.25 / 40 * (1 - 0.01), rel=0.02)
    sends(p, fake, 40)
    assert p.slowdown == 1.0
    p.pause(1.0)  # a 503's Retry-After pauses without slowing down
    assert p.slowdown == 1.0 and sends(p, fake, 1)[0] >= fake.now


class StallingServer(httpx.AsyncBaseTransport):
    """A supplier with a token-bucket limit that stalls once: requests arriving during the stall are
    processed together when it ends, as a busy server drains its socket queue."""

    def __init__(self, rate: float, burst: int, stall_after: int, stall_seconds: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), time.monotonic()
        self.stall_after, self.stall_seconds = stall_after, stall_seconds
        self.stall_until = 0.0
        self.requests = 0
        self.throttled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests == self.stall_after:
            self.stall_until = time.monotonic() + self.stall_seconds
        delay = self.stall_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            self.throttled += 1
            return httpx.Response(429, headers={"Retry-After": f"{(1 - self.tokens) / self.rate:.3f}"})
        self.tokens -= 1
        return httpx.Response(200, json={"ok": True})


def test_no_429_from_a_server_that_stalls_and_then_counts_queued_requests_at_once():
    server = StallingServer(rate=50, burst=4, stall_after=20, stall_seconds=0.3)
    entry = SupplierEntry(
        id="stally",
        kind="rest_batch",
        base_url="http://supplier.test",
        rate_limit=RateLimitConfig(requests_per_second=50, burst=2, max_in_flight=4),
        retry=RetryConfig(max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.05),
    )

    async def fetch_all() -> None:
        async with SupplierHttp(entry, transport=server) as http:
            await asyncio.gather(*(http.request_json("GET", "/offers") for _ in range(60)))

    started = time.monotonic()
    asyncio.run(fetch_all())
    elapsed = time.monotonic() - started
    assert server.throttled == 0 and server.requests == 60
    assert elapsed < 60 / (50 * 0.9) + 0.3 + 1.0  # still close to the allowed rate around the stall


def test_a_registry_entry_paces_below_its_limit_by_default():
    entry = SupplierEntry(
        id="plain", kind="rest_batch", base_url="http://x", rate_limit=RateLimitConfig(requests_per_second=40)
    )
    assert RateLimitConfig().margin > 0
    assert SupplierHttp(entry).pacer.interval == pytest.approx(1 / (40 * (1 - RateLimitConfig().margin)))
