"""The one retry mechanism of every HTTP client: tenacity, honouring Retry-After, else full-jitter backoff.

A client raises `RetryableError` from an attempt that may be retried (429, 5xx, timeouts, broken
connections); `retrying`/`async_retrying` retry it a bounded number of times, waiting what the server
asked for (capped) or an exponential backoff with full jitter, and re-raise the last error when the
attempts run out. What an attempt means (a signed push, a page, a download) stays in each client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)
from tenacity.wait import wait_base


class RetryableError(Exception):
    """One attempt failed in a way worth retrying (429, 5xx, timeout, connection, malformed body)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/invalid."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def full_jitter(attempt: int, initial: float, maximum: float) -> float:
    """Backoff before retry `attempt` (1-based): uniform in [0, min(maximum, initial * 2^(attempt-1))]."""
    # Full jitter keeps many retrying clients from hammering a server in lockstep.
    return random.uniform(0, min(maximum, initial * 2 ** (attempt - 1)))


class RetryAfterOrBackoff(wait_base):
    """Wait what the server asked for (Retry-After, at most `max_retry_after`), else full-jitter backoff."""

    def __init__(self, initial: float, maximum: float, max_retry_after: float | None = None) -> None:
        self._initial = initial
        self._maximum = maximum
        self._max_retry_after = max_retry_after

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            if self._max_retry_after is None:
                return error.retry_after
            return min(error.retry_after, self._max_retry_after)
        return full_jitter(retry_state.attempt_number, self._initial, self._maximum)


def _policy(
    max_attempts: int,
    initial: float,
    maximum: float,
    max_retry_after: float | None,
    before_sleep: Callable[[RetryCallState], None] | None,
) -> dict[str, object]:
    """The settings both the sync and the async retrier share."""
    return {
        "stop": stop_after_attempt(max_attempts),
        "wait": RetryAfterOrBackoff(initial, maximum, max_retry_after),
        "retry": retry_if_exception_type(RetryableError),
        "reraise": True,
        **({"before_sleep": before_sleep} if before_sleep else {}),
    }


def retrying(
    *,
    max_attempts: int,
    initial: float,
    maximum: float,
    max_retry_after: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """A retrier for blocking clients: `for attempt in retrying(...): with attempt: ...`."""
    return Retrying(sleep=sleep, **_policy(max_attempts, initial, maximum, max_retry_after, before_sleep))


class RetrySettings(Protocol):
    """What a client's configuration says about its retries (RetryConfig and the storefront resources)."""

    max_attempts: int
    backoff_initial_seconds: float
    backoff_max_seconds: float
    max_retry_after_seconds: float


def retrying_for(
    settings: RetrySettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """`retrying` with a client's configured attempts, backoff and Retry-After cap."""
    return retrying(
        max_attempts=settings.max_attempts,
        initial=settings.backoff_initial_seconds,
        maximum=settings.backoff_max_seconds,
        max_retry_after=settings.max_retry_after_seconds,
        sleep=sleep,
        before_sleep=before_sleep,
    )


def async_retrying(
    *,
    max_attempts: int,
    initial: float,
    maximum: float,
    max_retry_after: float | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """A retrier for async clients: `async for attempt in async_retrying(...): with attempt: ...`."""
    return AsyncRetrying(**_policy(max_attempts, initial, maximum, max_retry_after, before_sleep))
