"""The CDN file's download: a conditional GET streamed to a locked temporary file, under a size limit.

Retries go through the one retry mechanism (resources/http_retry.py); a body cut short is retried and
then reported as truncated; the temporary file is removed when the download is used up, and files a
killed run left behind are removed before the next download starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import Retrying

from resources.cdn_crypto import (
    CdnHttpError,
    TooLargeError,
    TruncatedError,
)
from resources.config import RetryConfig
from resources.http_retry import RetryableError, parse_retry_after, retrying_for
from resources.warehouse import remove_orphan_temp_files

_DOWNLOAD_CHUNK = 1 << 20
DOWNLOAD_PREFIX = ".cdn-download-"
DOWNLOAD_SUFFIX = ".enc"


@dataclass(frozen=True)
class Download:
    """The outcome of one conditional GET: unchanged (304) or a downloaded temporary file."""

    unchanged: bool
    status_code: int
    path: Path | None = None
    size: int = 0
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    attempts: int = 1
    # Open descriptor holding the temp file's flock while the download is in use (see _save).
    lock_fd: int | None = None


class _IncompleteBody(RetryableError):
    """The connection closed before the whole body arrived."""


def safe_url(url: str) -> str:
    """The URL without credentials or query string, which may carry tokens, for messages."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


class CdnFileClient:
    """HTTP client for one CDN file: conditional GET, streamed to disk under max_bytes, bounded retries."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 30.0,
        retry: RetryConfig | None = None,
        max_bytes: int = 512 * 1024 * 1024,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
        tmp_dir: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._timeout = httpx.Timeout(timeout_seconds)
        self._retry = retry or RetryConfig()
        self._max_bytes = max_bytes
        self._headers = headers or {}
        self._auth = auth
        self._tmp_dir = tmp_dir
        self._transport = transport
        self._sleep = sleep

    @contextlib.contextmanager
    def download(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Iterator[Download]:
        """GET url (If-None-Match / If-Modified-Since when given); the temp file is removed on exit."""
        headers = dict(self._headers)
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        retrier = retrying_for(self._retry, sleep=self._sleep or time.sleep)
        result: Download | None = None
        shown = safe_url(url)
        # Downloads a killed run left behind (their lock died with it) go before this one starts.
        remove_orphan_temp_files(
            Path(self._tmp_dir or tempfile.gettempdir()), DOWNLOAD_PREFIX, DOWNLOAD_SUFFIX
        )
        try:
            with httpx.Client(timeout=self._timeout, transport=self._transport, auth=self._auth) as client:
                result = retrier(self._attempt, client, url, headers, retrier)
            yield result
        except _IncompleteBody as exc:
            raise TruncatedError(f"download of {shown} ended early after retries ({exc})") from None
        except RetryableError as exc:
            raise CdnHttpError(
                f"{exc} from {shown} after {self._retry.max_attempts} attempts", status_code=exc.status
            ) from None
        finally:
            if result is not None and result.path is not None:
                result.path.unlink(missing_ok=True)
            if result is not None and result.lock_fd is not None:
                os.close(result.lock_fd)

    def _attempt(
        self, client: httpx.Client, url: str, headers: dict[str, str], retrier: Retrying
    ) -> Download:
        attempts = retrier.statistics.get("attempt_number", 1)
        try:
            with client.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status == 304:
                    return Download(
                        unchanged=True,
                        status_code=status,
                        etag=response.headers.get("ETag") or headers.get("If-None-Match"),
                        last_modified=response.headers.get("Last-Modified")
                        or headers.get("If-Modified-Since"),
                        attempts=attempts,
                    )
                if status == 429 or status >= 500:
                    raise RetryableError(
                        f"HTTP {status}",
                        status=status,
                        retry_after=parse_retry_after(response.headers.get("Retry-After"))
                        if status in (429, 503)
                        else None,
                    )
                if status != 200:
                    raise CdnHttpError(f"HTTP {status} from {safe_url(url)}", status_code=status)
                return self._save(response, url, attempts)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection failed ({type(exc).__name__})") from None

    def _save(self, response: httpx.Response, url: str, attempts: int) -> Download:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise TooLargeError(f"{safe_url(url)} is {declared} bytes, over max_bytes={self._max_bytes}")
        fd, name = tempfile.mkstemp(prefix=DOWNLOAD_PREFIX, suffix=DOWNLOAD_SUFFIX, dir=self._tmp_dir)
        path = Path(name)
        # Locked for as long as the download is in use: a killed run's file is then an orphan that
        # the next download removes (remove_orphan_temp_files), never a live one.
        fcntl.flock(fd, fcntl.LOCK_EX)
        lock_fd = os.dup(fd)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise TooLargeError(f"{safe_url(url)} exceeds max_bytes={self._max_bytes}")
                    digest.update(chunk)
                    handle.write(chunk)
        except httpx.RemoteProtocolError as exc:
            path.unlink(missing_ok=True)
            os.close(lock_fd)
            raise _IncompleteBody(f"got {size} bytes, then {type(exc).__name__}") from None
        except BaseException:
            path.unlink(missing_ok=True)
            os.close(lock_fd)
            raise
        return Download(
            unchanged=False,
            status_code=response.status_code,
            path=path,
            size=size,
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
            sha256=digest.hexdigest(),
            attempts=attempts,
            lock_fd=lock_fd,
        )


__all__ = ["DOWNLOAD_PREFIX", "DOWNLOAD_SUFFIX", "CdnFileClient", "Download", "safe_url"]
