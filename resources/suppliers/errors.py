"""Errors raised by supplier clients; messages name supplier, endpoint and status, never a secret."""

from __future__ import annotations

from typing import Any


class SupplierError(RuntimeError):
    """A supplier could not deliver offers (after retries, or at once for a non-retryable answer)."""

    def __init__(
        self,
        message: str,
        *,
        supplier: str,
        endpoint: str | None = None,
        status: int | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.supplier = supplier
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts
        self.stats: Any = None  # the FetchStats up to the failure, set by fetch_supplier_offers


class RetryableError(Exception):
    """One attempt failed in a way worth retrying (429, 5xx, timeout, connection, malformed body)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
