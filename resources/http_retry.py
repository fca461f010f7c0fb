"""Retry timing shared by every HTTP client: Retry-After parsing and full-jitter backoff."""

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


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
