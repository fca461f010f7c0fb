"""The webhook adapter against the sandbox storefront: every status-code path of docs/architecture.md §7."""

import time

import httpx
import pytest

from resources.storefront import (
    ALREADY_APPLIED,
    APPLIED,
    DEFERRED,
    IN_DOUBT,
    REFUSED,
    PushChunk,
    PushOutcome,
    PushStats,
    Storefront,
    WebhookPusher,
    idempotency_key,
    sign,
)
from tests.storefront.conftest import FAST, SECRET

ENTRIES = [
    {
        "sku": f"SKU-{i:06d}",
        "price": f"{10 + i}.5000",
        "currency": "EUR",
        "available": True,
        "supplier": "alpha",
        "version": 1,
    }
    for i in range(3)
]


class Sleeps:
    """A sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def storefront(url: str, **overrides) -> Storefront:
    return Storefront(url=f"{url}/storefront", webhook_secret=SECRET, **{**FAST, **overrides})


def push(
    sf: Storefront,
    sleeps: Sleeps | None = None,
    batch: str = "batch-000",
    entries=ENTRIES,
    *,
    sent_before: bool = False,
):
    stats = PushStats()
    chunk = PushChunk.from_entries(batch, entries)
    if sent_before:  # resent from the journal, as sync_batch does
        chunk = PushChunk.build(batch, chunk.entries, key=chunk.key, sent_before=True)
    with sf.open_pusher(sleep=sleeps or Sleeps()) as pusher:
        outcome = pusher.push_prices(chunk, stats=stats)
    return outcome, stats


def test_applied_then_409_confirming_the_journaled_key(sandbox):
    sf = storefront(sandbox.url)
    first, _ = push(sf)
    second, stats = push(sf, sent_before=True)
    assert (first.status, second.status) == (APPLIED, ALREADY_APPLIED)
    assert first.key == second.key == idempotency_key("batch-000", ENTRIES)
    assert stats.duplicates_avoided == 1
    seen = sandbox.pushes()
    assert len(seen["pushes"]) == 1 and seen["pushes"][0]["key"] == first.key
    assert seen["duplicates"] == 1
    assert seen["prices"]["SKU-000002"]["price"] == "12.5000"


def test_a_409_on_the_first_attempt_of_a_chunk_never_sent_is_not_success(sandbox):
    """Even a 409 naming the key: nothing journaled that key, so the storefront cannot have it from us."""
    sf = storefront(sandbox.url)
    push(sf)
    fresh, stats = push(sf)  # the same content again, built fresh (not resent from a journal)
    assert fresh.status == REFUSED and not fresh.acknowledged and fresh.http_status == 409
    assert "confirms a key never sent before" in fresh.error and stats.duplicates_avoided == 0


def test_a_stray_409_is_a_refusal_with_the_body_as_the_reason(sandbox):
    sandbox.control(faults={"storefront": {"stray_409_next": 1}})
    outcome, stats = push(storefront(sandbox.url), sent_before=True)
    assert outcome.status == REFUSED and not outcome.acknowledged
    assert "does not confirm the Idempotency-Key sent" in outcome.error
    assert "resource version changed" in outcome.error  # the storefront's body
    assert stats.duplicates_avoided == 0 and sandbox.pushes()["prices"] == {}


def handler_answering(*answers: tuple[int, object]):
    """An httpx handler that answers the given (status, JSON body or text) in turn."""
    pending = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = pending.pop(0)
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return handle, seen


def push_through(handle, *, sent_before: bool) -> PushOutcome:
    sf = Storefront(url="http://storefront.test", webhook_secret=SECRET, **FAST)
    chunk = PushChunk.from_entries("batch-000", ENTRIES)
    chunk = PushChunk.build("batch-000", chunk.entries, key=chunk.key, sent_before=sent_before)
    with httpx.Client(base_url=sf.url, transport=httpx.MockTransport(handle)) as client:
        return WebhookPusher(sf, client, Sleeps()).push_prices(chunk, stats=PushStats())


KEY = idempotency_key("batch-000", ENTRIES)


@pytest.mark.parametrize(
    ("answers", "sent_before", "status"),
    [
        ([(409, {"status": "already_applied", "idempotency_key": KEY})], True, ALREADY_APPLIED),
        ([(409, {"status": "already_applied", "idempotency_key": KEY})], False, REFUSED),
        ([(409, {"status": "already_applied", "idempotency_key": "0" * 40})], True, REFUSED),
        ([(409, {"status": "already applied"})], True, REFUSED),  # the old body named no key
        ([(409, {"status": "conflict", "idempotency_key": KEY})], True, REFUSED),
        ([(409, "<html>409 Conflict</html>")], True, REFUSED),
        ([(409, "")], True, REFUSED),
        # A lost answer (502) may mean it was applied: a confirming 409 on the retry is success...
        (
            [(502, "bad gateway"), (409, {"status": "already_applied", "idempotency_key": KEY})],
            False,
            ALREADY_APPLIED,
        ),
        # ...but after a 429 the first attempt was certainly not applied: a 409 then confirms nothing.
        ([(429, "slow down"), (409, {"status": "already_applied", "idempotency_key": KEY})], False, REFUSED),
    ],
)
def test_409_is_already_applied_only_when_it_confirms_a_key_that_may_have_been_applied(
    answers, sent_before, status
):
    handle, seen = handler_answering(*answers)
    outcome = push_through(handle, sent_before=sent_before)
    assert outcome.status == status
    assert len(seen) == len(answers) and all(r.headers["Idempotency-Key"] == KEY for r in seen)
    if status == REFUSED:
        assert outcome.error.startswith("storefront answered 409 for batch batch-000 but ")


def test_429_waits_for_retry_after_then_succeeds(sandbox):
    sandbox.control(faults={"storefront": {"throttle_next": 2, "retry_after": 7}})
    sleeps = Sleeps()
    outcome, stats = push(storefront(sandbox.url), sleeps)
    assert outcome.status == APPLIED and outcome.attempts == 3
    assert sleeps.calls == [7.0, 7.0]
    assert (stats.throttled, stats.requests, stats.retries) == (2, 3, 2)


def test_retry_after_is_capped(sandbox):
    sandbox.control(faults={"storefront": {"throttle_next": 1, "retry_after": 3600}})
    sleeps = Sleeps()
    outcome, _ = push(storefront(sandbox.url, max_retry_after_seconds=2.0), sleeps)
    assert outcome.status == APPLIED and sleeps.calls == [2.0]


def test_other_4xx_fails_at_once_with_a_clear_error(sandbox):
    sandbox.control(faults={"storefront": {"reject_skus": ["SKU-000001"]}})
    sleeps = Sleeps()
    outcome, stats = push(storefront(sandbox.url), sleeps)
    assert outcome.status == REFUSED and outcome.http_status == 400
    assert "HTTP 400" in outcome.error and "SKU-000001" in outcome.error
    assert stats.requests == 1 and sleeps.calls == []
    assert sandbox.pushes()["pushes"] == []


def test_5xx_retries_with_jittered_backoff(sandbox):
    sandbox.control(faults={"storefront": {"status": 500}})
    sleeps = Sleeps()
    sf = storefront(sandbox.url, max_attempts=4, backoff_initial_seconds=0.1, backoff_max_seconds=0.15)
    outcome, stats = push(sf, sleeps)
    # A 500 may come after the storefront applied the push: giving up leaves it in doubt.
    assert outcome.status == IN_DOUBT and outcome.attempts == 4 and stats.requests == 4
    assert len(sleeps.calls) == 3  # no pointless sleep after the last attempt
    assert all(0 <= s <= ceiling for s, ceiling in zip(sleeps.calls, [0.1, 0.15, 0.15], strict=True))


def test_only_503s_leave_the_chunk_deferred_not_in_doubt(sandbox):
    sandbox.control(faults={"storefront": {"outage": True, "retry_after": 0}})
    outcome, stats = push(storefront(sandbox.url))
    assert outcome.status == DEFERRED and stats.requests == FAST["max_attempts"]
    assert "503" in outcome.error


def test_unreachable_storefront_is_deferred():
    outcome, _stats = push(Storefront(url="http://127.0.0.1:9/storefront", webhook_secret=SECRET, **FAST))
    assert outcome.status == DEFERRED and "not reachable" in outcome.error


def test_applied_but_response_lost_is_retried_with_the_same_key(sandbox):
    sandbox.control(faults={"storefront": {"lose_response_next": 1}})
    outcome, stats = push(storefront(sandbox.url))
    assert outcome.status == ALREADY_APPLIED and outcome.attempts == 2
    assert stats.duplicates_avoided == 1
    seen = sandbox.pushes()
    assert len(seen["pushes"]) == 1 and seen["duplicates"] == 1
    assert sandbox.counters()["storefront.applied"] == len(ENTRIES)


def test_timeout_is_retried_with_the_same_key_and_applied_once(sandbox):
    sandbox.control(faults={"storefront": {"slow_next": 1, "latency_ms": 600}})
    sf = storefront(sandbox.url, timeout_seconds=0.2, max_attempts=6, backoff_initial_seconds=0.3)
    outcome, stats = push(sf)
    assert outcome.status in (APPLIED, ALREADY_APPLIED)
    assert stats.retries >= 1
    # The timed-out attempt is still being processed: it must end as a 409, not a second apply.
    deadline = time.monotonic() + 5
    while sandbox.pushes()["duplicates"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = sandbox.pushes()
    assert seen["duplicates"] == 1
    assert len(seen["pushes"]) == 1
    assert {p["key"] for p in seen["pushes"]} == {outcome.key}
    assert seen["repeated_versions"] == 0


def test_sandbox_rejects_bad_signatures(sandbox):
    outcome, _stats = push(Storefront(url=f"{sandbox.url}/storefront", webhook_secret="wrong", **FAST))
    assert outcome.status == REFUSED and outcome.http_status == 401
    assert "X-Signature does not match" in outcome.error
    assert sandbox.pushes()["bad_signatures"] == 1 and sandbox.pushes()["pushes"] == []


@pytest.mark.parametrize(
    ("header", "problem"),
    [("", "missing or malformed"), ("t=1,v1=00", "outside tolerance")],
)
def test_sandbox_rejects_missing_or_stale_signatures(sandbox, header, problem):
    body = PushChunk.from_entries("batch-000", ENTRIES).body
    response = httpx.post(
        f"{sandbox.url}/storefront/prices",
        content=body,
        headers={"Idempotency-Key": "k", "X-Signature": header, "Content-Type": "application/json"},
    )
    assert response.status_code == 401 and problem in response.json()["error"]


def test_signature_covers_the_exact_body(sandbox):
    body = PushChunk.from_entries("batch-000", ENTRIES).body
    header = sign(SECRET, body, int(time.time()))
    tampered = body.replace(b"10.5000", b"0.0100")
    response = httpx.post(
        f"{sandbox.url}/storefront/prices",
        content=tampered,
        headers={"Idempotency-Key": "k", "X-Signature": header, "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert sandbox.pushes()["prices"] == {}
