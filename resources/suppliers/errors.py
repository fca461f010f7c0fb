"""Errors raised by supplier clients; messages name supplier, endpoint and status, never a secret."""

from __future__ import annotations

from typing import Any

# The one retryable-attempt error of every HTTP client, raised by the supplier clients too.
from resources.http_retry import RetryableError

__all__ = ["RetryableError", "SupplierError"]


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
