"""Encrypted CDN price files: conditional download, streamed decrypt and parse into the offers contract.

`CdnFile` is the resource (one per outside system): it downloads a supplier's file with a conditional
GET, streamed to a temporary file under a size limit, with bounded retries. `decrypt_price_file` turns
the downloaded file into (offers, quarantine) frames chunk by chunk, so memory stays a small multiple of
the plaintext; `parse_price_file` does the same for plaintext already in memory.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import httpx
import polars as pl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from dagster import ConfigurableResource
from tenacity import Retrying

from resources.cdn_crypto import (
    DEFAULT_CHUNK,
    CdnFeedError,
    CdnHttpError,
    IntegrityError,
    OpenSSLDecryptor,
    ShrunkFileError,
    TooLargeError,
    TruncatedError,
    UnexpectedHeaderError,
)
from resources.config import CdnFileConfig, ConfigError, RetryConfig, SupplierEntry
from resources.http_retry import RetryableError, parse_retry_after, retrying
from resources.offer_validation import validate_offers
from resources.schemas import MONEY, OFFERS_SCHEMA, QUARANTINE_SCHEMA, UTC_TS, conform
from resources.secrets import read_secret
from resources.warehouse import remove_orphan_temp_files

# Limits shared by the fast screen and validate_offers, so both paths accept exactly the same rows.
MAX_PRICE = Decimal("100000")
MAX_STOCK = 10_000_000
REQUIRED_COLUMNS = ("sku", "price", "currency")
STOCK_NOT_INTEGER = "stock is not an integer"
NOT_UTF8 = "not valid UTF-8 text"
_BOM = b"\xef\xbb\xbf"
_PADDING = (b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\x85")
_MAX_HEADER_BYTES = 4096
_DOWNLOAD_CHUNK = 1 << 20
DOWNLOAD_PREFIX = ".cdn-download-"
DOWNLOAD_SUFFIX = ".enc"


# ---------------------------------------------------------------- download


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


def _safe_url(url: str) -> str:
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
        retrier = retrying(
            max_attempts=self._retry.max_attempts,
            initial=self._retry.backoff_initial_seconds,
            maximum=self._retry.backoff_max_seconds,
            max_retry_after=self._retry.max_retry_after_seconds,
            sleep=self._sleep or time.sleep,
        )
        result: Download | None = None
        shown = _safe_url(url)
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
                    raise CdnHttpError(f"HTTP {status} from {_safe_url(url)}", status_code=status)
                return self._save(response, url, attempts)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection failed ({type(exc).__name__})") from None

    def _save(self, response: httpx.Response, url: str, attempts: int) -> Download:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise TooLargeError(f"{_safe_url(url)} is {declared} bytes, over max_bytes={self._max_bytes}")
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
                        raise TooLargeError(f"{_safe_url(url)} exceeds max_bytes={self._max_bytes}")
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


class CdnFile(ConfigurableResource):
    """Suppliers' encrypted CDN price files: download settings and access to their passphrases."""

    tmp_dir: str | None = None  # where downloads are spooled; the system temp dir when unset

    def url(self, entry: SupplierEntry) -> str:
        """The file's URL: the supplier's base URL (with ${VAR} expanded) plus the cdn path."""
        if entry.cdn is None:
            raise ConfigError(f"supplier {entry.id!r} has no 'cdn' section")
        return entry.resolved_base_url().rstrip("/") + "/" + entry.cdn.path.lstrip("/")

    def client(self, entry: SupplierEntry) -> CdnFileClient:
        """A download client with the supplier's timeout, retry policy, size limit and auth headers."""
        if entry.cdn is None:
            raise ConfigError(f"supplier {entry.id!r} has no 'cdn' section")
        return CdnFileClient(
            timeout_seconds=entry.timeout_seconds,
            retry=entry.retry,
            max_bytes=entry.cdn.max_bytes,
            headers=_auth_headers(entry),
            auth=_basic_auth(entry),
            tmp_dir=self.tmp_dir,
        )

    def side_url(self, entry: SupplierEntry, path: str) -> str:
        """The URL of a file the supplier publishes beside the price file (checksum, signature)."""
        return entry.resolved_base_url().rstrip("/") + "/" + path.lstrip("/")

    def verify(self, entry: SupplierEntry, download: Download) -> list[str]:
        """Check a downloaded file against the checksum and/or detached signature the registry names.

        Returns what was verified ("sha256", "signature"); raises IntegrityError on a mismatch, before
        anything is decrypted or cached.
        """
        cdn = entry.cdn
        if cdn is None or download.path is None or download.sha256 is None:
            return []
        verified = []
        client = self.client(entry)
        if cdn.checksum_path:
            published = _read_side_file(client, self.side_url(entry, cdn.checksum_path), "checksum")
            verify_checksum(
                download.sha256, published, source=_safe_url(self.side_url(entry, cdn.checksum_path))
            )
            verified.append("sha256")
        if cdn.signature_path and cdn.signature_public_key:
            url = self.side_url(entry, cdn.signature_path)
            signature = _read_side_file(client, url, "signature")
            verify_signature(
                download.path, download.sha256, signature, cdn.signature_public_key, source=_safe_url(url)
            )
            verified.append("signature")
        return verified

    def passphrase(self, entry: SupplierEntry) -> bytes:
        """The file's passphrase from the environment variable the registry names."""
        if entry.cdn is None:
            raise ConfigError(f"supplier {entry.id!r} has no 'cdn' section")
        value = read_secret(entry.cdn.passphrase_env)
        if not value:
            raise ConfigError(
                f"supplier {entry.id!r}: environment variable {entry.cdn.passphrase_env} "
                "(the CDN file passphrase) is not set"
            )
        return value.encode()


_SIDE_FILE_MAX = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_BASE64_TEXT = re.compile(rb"^[A-Za-z0-9+/=\s]+$")


def _read_side_file(client: CdnFileClient, url: str, what: str) -> bytes:
    """A small file beside the price file (same retries and auth); unreadable is an http_error."""
    try:
        with client.download(url) as side:
            if side.path is None or side.size > _SIDE_FILE_MAX:
                raise IntegrityError(f"the {what} file {_safe_url(url)} is missing or larger than 64 KiB")
            return side.path.read_bytes()
    except CdnHttpError as exc:
        raise CdnHttpError(f"{what} file: {exc.detail}", status_code=exc.status_code) from None


def verify_checksum(sha256: str, published: bytes, *, source: str) -> None:
    """`published` is `sha256sum` output ("<hex>  <name>") or the bare hex; it must equal `sha256`."""
    text = published.decode("ascii", errors="replace").strip()
    token = text.split()[0] if text else ""
    if not _HEX64.match(token):
        raise IntegrityError(f"{source} does not hold a SHA-256 checksum (got {text[:40]!r})")
    if token.lower() != sha256.lower():
        raise IntegrityError(
            f"the file's SHA-256 {sha256[:16]}... does not match the checksum published at {source} "
            f"({token.lower()[:16]}...): corrupted or tampered with on the way"
        )


def verify_signature(path: Path, sha256: str, signature: bytes, public_key_pem: str, *, source: str) -> None:
    """Verify a detached signature of the file: RSA or ECDSA over SHA-256 (`openssl dgst -sha256 -sign`,
    checked against the digest already computed while downloading), or Ed25519 over the bytes."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
    except ValueError as exc:
        raise ConfigError(f"cdn signature_public_key is not a PEM public key: {exc}") from None
    candidates = [signature]
    if _BASE64_TEXT.match(signature):
        with contextlib.suppress(ValueError):
            candidates.append(base64.b64decode(b"".join(signature.split()), validate=True))
    digest = bytes.fromhex(sha256)
    for candidate in candidates:
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(candidate, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(candidate, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(candidate, path.read_bytes())
            else:
                raise ConfigError(f"cdn signature_public_key: unsupported key type {type(key).__name__}")
            return
        except InvalidSignature:
            continue
    raise IntegrityError(f"the file's signature from {source} does not verify with the registry's public key")


def check_sku_shrink(
    previous_skus: pl.Series | None,
    offers: pl.DataFrame,
    *,
    max_share: Decimal,
    sha256: str | None,
) -> None:
    """Raise ShrunkFileError when the new file lost more than `max_share` of the previous file's SKUs."""
    if previous_skus is None or previous_skus.len() == 0:
        return
    previous = previous_skus.unique()
    lost = int((~previous.is_in(offers.get_column("sku").implode())).sum())
    # lost / previous > max_share, exactly
    if Decimal(lost) > max_share * previous.len():
        share = lost / previous.len()
        raise ShrunkFileError(
            f"the new file has lost {lost} of the previous file's {previous.len()} SKUs ({share:.1%} > "
            f"{max_share:.0%}) and the supplier publishes no checksum or signature to prove it whole: held, "
            f"not cached; if it is right, accept it with run config accept_sha256: {sha256}",
            sha256=sha256,
            lost=lost,
            previous=previous.len(),
        )


def _secret(entry: SupplierEntry, name: str) -> str:
    value = read_secret(name)
    if not value:
        raise ConfigError(f"supplier {entry.id!r}: environment variable {name} is not set")
    return value


def _auth_headers(entry: SupplierEntry) -> dict[str, str]:
    auth = entry.auth
    if auth.kind == "api_key" and auth.key_env:
        return {auth.header: _secret(entry, auth.key_env)}
    if auth.kind in ("none", "basic"):
        return {}
    raise ConfigError(f"supplier {entry.id!r}: auth kind {auth.kind!r} is not supported for CDN files")


def _basic_auth(entry: SupplierEntry) -> httpx.BasicAuth | None:
    auth = entry.auth
    if auth.kind == "basic" and auth.username_env and auth.password_env:
        return httpx.BasicAuth(_secret(entry, auth.username_env), _secret(entry, auth.password_env))
    return None


# ---------------------------------------------------------------- parse


@dataclass(frozen=True)
class _Roles:
    """Which CSV column holds which offer field."""

    columns: list[str]
    stock: bool

    @classmethod
    def from_header(cls, header: list[str]) -> _Roles:
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise ConfigError(f"cdn expected_header must contain {', '.join(missing)}")
        return cls(columns=list(header), stock="stock" in header)


class PriceFileParser:
    """Incremental CSV parser: header check, fast screen of clean rows, validate_offers for the rest.

    Rows that provably pass every validate_offers rule (measured: pandera over 1M rows costs ~10x
    the decrypt) are typed with vectorized polars expressions; every other row goes through
    validate_offers, which decides and names the reason. The two paths accept identical rows
    (tests/test_cdn_crypto.py checks it with generated files).
    """

    def __init__(
        self,
        cfg: CdnFileConfig,
        *,
        supplier: str,
        fetched_at: datetime,
        known_currencies: Collection[str] | None = None,
    ) -> None:
        if fetched_at.tzinfo is None:
            raise ValueError("fetched_at must be timezone-aware (UTC)")
        self._cfg = cfg
        self._roles = _Roles.from_header(list(cfg.expected_header))
        self._delimiter = cfg.delimiter.encode()
        self._supplier = supplier
        self._fetched_at = fetched_at.astimezone(UTC)
        self._known = {code.strip().upper() for code in known_currencies} if known_currencies else None
        self._seen_currencies: set[str] = set()
        self._carry = b""
        self._header_done = False
        self._line = 1  # the header is line 1
        self._clean: list[pl.DataFrame] = []
        self._ascending = True
        self._last_sku: str | None = None
        self._suspect: list[pl.DataFrame] = []
        self._rejected: list[pl.DataFrame] = []
        self.rows_read = 0

    def feed(self, piece: bytes | memoryview) -> None:
        """Consume the next piece of plaintext (it may end mid-line)."""
        if not self._header_done:
            data = self._take_header(self._carry + bytes(piece))
            self._carry = b""
            if not self._header_done:
                self._carry = data
                return
            piece = data
        view = memoryview(piece)
        # Lines are short: look for the last newline in the tail first, saving a copy of the piece.
        tail_start = max(0, len(view) - 65536)
        cut = bytes(view[tail_start:]).rfind(b"\n")
        cut = tail_start + cut + 1 if cut >= 0 else bytes(view).rfind(b"\n") + 1
        if cut:
            block = b"".join((self._carry, view[:cut]))
            self._carry = bytes(view[cut:])
            self._parse_lines(block)
        else:
            self._carry = b"".join((self._carry, view))

    def finish(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(offers per OFFERS_SCHEMA, quarantine per QUARANTINE_SCHEMA) once all plaintext was fed."""
        if not self._header_done:
            self._take_header(self._carry, final=True)
        if self._carry:
            self._parse_lines(self._carry + b"\n")
            self._carry = b""
        clean = pl.concat(self._clean) if self._clean else _empty_clean()
        suspect = pl.concat(self._suspect, how="vertical_relaxed") if self._suspect else self._empty_raw()
        clean, suspect = self._move_duplicates(clean, suspect)
        suspect, stock_rejects = self._split_bad_stock(suspect)
        known = self._known if self._known is not None else self._seen_currencies
        if suspect.height:
            validated, quarantined = validate_offers(
                self._to_raw_offers(suspect),
                supplier=self._supplier,
                known_currencies=known,
                fetched_at=self._fetched_at,
                max_price=MAX_PRICE,
                max_stock=MAX_STOCK,
            )
        else:
            validated, quarantined = _empty(OFFERS_SCHEMA), _empty(QUARANTINE_SCHEMA)
        stamped = clean.with_columns(
            supplier=pl.lit(self._supplier, dtype=pl.String),
            fetched_at=pl.lit(self._fetched_at, dtype=UTC_TS),
        )
        offers = conform(stamped, OFFERS_SCHEMA)
        if validated.height:
            offers = pl.concat([offers, validated])
        quarantine = pl.concat([*self._rejected, stock_rejects, quarantined], how="vertical_relaxed")
        return offers, conform(quarantine, QUARANTINE_SCHEMA)

    # -- header

    def _take_header(self, data: bytes, *, final: bool = False) -> bytes:
        end = data.find(b"\n")
        if end < 0:
            if not final and len(data) < _MAX_HEADER_BYTES:
                return data
            end = len(data)
        line = data[:end].removeprefix(_BOM).rstrip(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise UnexpectedHeaderError(
                "the first line is not text: wrong passphrase or KDF settings, or not a CSV file"
            ) from None
        got = [name.strip() for name in next(csv.reader([text], delimiter=self._cfg.delimiter), [])]
        if got != list(self._cfg.expected_header):
            shown = text if len(text) <= 120 else text[:120] + "..."
            raise UnexpectedHeaderError(
                f"expected header {self._cfg.delimiter.join(self._cfg.expected_header)!r}, got {shown!r}"
            )
        self._header_done = True
        return data[end + 1 :]

    # -- rows

    def _parse_lines(self, block: bytes) -> None:
        """Parse complete lines (block ends with a newline) into screened frames."""
        frame = self._parse_lines_fast(block)
        if frame is None:
            frame = self._parse_lines_slowly(block)
            self._line += block.count(b"\n")
        else:
            self._line += frame.height
        self.rows_read += frame.height
        # Pure ASCII without spaces, tabs or CRs cannot pad a value with whitespace.
        padded = not block.isascii() or any(char in block for char in _PADDING)
        self._screen(frame, may_have_padding=padded)

    def _parse_lines_fast(self, block: bytes) -> pl.DataFrame | None:
        """polars' reader, trusted only where it cannot misread; None sends the block to the slow path."""
        if b'"' in block:
            return None
        columns = self._roles.columns
        strings = dict.fromkeys(columns, pl.String())
        # Reading stock as Int64 is faster than casting text; a non-integer stock retries as text.
        for schema in ({**strings, "stock": pl.Int64()} if self._roles.stock else strings, strings):
            try:
                frame = pl.read_csv(
                    block,
                    has_header=False,
                    new_columns=columns,
                    schema=schema,
                    separator=self._cfg.delimiter,
                    quote_char=None,
                    raise_if_empty=False,
                )
                break
            except pl.exceptions.ComputeError:
                continue
        else:
            return None
        # polars rejects lines with too many fields but pads short ones with nulls: when the last
        # column has nulls, every line must have exactly (columns - 1) delimiters, which the total
        # proves once none has more.
        if frame.get_column(columns[-1]).null_count() and block.count(self._delimiter) != frame.height * (
            len(columns) - 1
        ):
            return None
        return frame.with_columns(
            _line=pl.int_range(self._line + 1, self._line + 1 + frame.height, dtype=pl.Int64)
        )

    def _parse_lines_slowly(self, block: bytes) -> pl.DataFrame:
        """Line by line with the csv module: ragged, undecodable or oddly quoted lines are rejected."""
        columns = self._roles.columns
        rows: list[list[str | None]] = []
        line_numbers: list[int] = []
        rejects: list[dict[str, object]] = []
        for offset, raw_line in enumerate(block.split(b"\n")[:-1]):
            number = self._line + 1 + offset
            line = raw_line.rstrip(b"\r")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                sku = line.split(self._delimiter, 1)[0].decode("utf-8", "replace") or None
                rejects.append(self._reject(number, sku, NOT_UTF8, line.decode("utf-8", "replace")))
                continue
            fields = next(csv.reader([text], delimiter=self._cfg.delimiter), [])
            if len(fields) != len(columns):
                reason = f"expected {len(columns)} fields, got {len(fields)}"
                rejects.append(self._reject(number, fields[0] if fields else None, reason, text))
                continue
            rows.append([value if value != "" else None for value in fields])
            line_numbers.append(number)
        if rejects:
            self._rejected.append(pl.DataFrame(rejects, schema=QUARANTINE_SCHEMA))
        frame = pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String()), orient="row")
        return frame.with_columns(_line=pl.Series(line_numbers, dtype=pl.Int64))

    def _reject(self, line: int, sku: str | None, reason: str, text: str) -> dict[str, object]:
        return {
            "supplier": self._supplier,
            "sku": sku,
            "reason": reason,
            "raw": json.dumps({"line": line, "text": text}),
            "fetched_at": self._fetched_at,
        }

    def _screen(self, frame: pl.DataFrame, *, may_have_padding: bool = True) -> None:
        """Split parsed rows into clean typed offers and suspects for validate_offers."""
        if self._known is None:
            self._seen_currencies |= {
                code
                for code in frame.get_column("currency").str.strip_chars().str.to_uppercase().unique()
                if code and len(code) == 3 and code.isascii() and code.isalpha()
            }
        known = sorted(self._known if self._known is not None else self._seen_currencies)
        has_stock = self._roles.stock
        # Cast once into columns: eager expressions are not deduplicated.
        frame = frame.with_columns(
            _price=pl.col("price").cast(MONEY, strict=False),
            _stock=pl.col("stock").cast(pl.Int64, strict=False)
            if has_stock
            else pl.lit(None, dtype=pl.Int64),
        )
        price, stock = pl.col("_price"), pl.col("_stock")
        clean = (
            pl.col("sku").is_not_null()
            & price.is_not_null()
            & (price > 0)
            & (price <= MAX_PRICE)
            & _one_of(pl.col("currency"), known)
            & (
                (pl.col("stock").is_null() if has_stock else pl.lit(True))
                | (stock.is_not_null() & (stock >= 0) & (stock <= MAX_STOCK))
            )
        )
        if may_have_padding:
            # validate_offers strips the SKU; only an already-stripped SKU is the same after it.
            clean = clean & (pl.col("sku").str.strip_chars() == pl.col("sku"))
        mask = frame.select(clean.fill_null(False)).to_series()
        all_clean = bool(mask.all())
        chosen = frame if all_clean else frame.filter(mask)
        typed = chosen.select(
            "sku",
            price=price,
            currency="currency",
            stock=stock,
            # Listed without a count means available, count unknown.
            in_stock=stock.is_null() | (stock > 0),
        )
        self._clean.append(typed)
        self._track_order(typed.get_column("sku"))
        if not all_clean:
            stock_text = pl.col("stock").cast(pl.String) if has_stock else pl.lit(None, dtype=pl.String)
            self._suspect.append(
                frame.filter(~mask).select("sku", "price", "currency", stock=stock_text, _line="_line")
            )

    def _track_order(self, skus: pl.Series) -> None:
        """Keep `_ascending` true while every clean SKU so far is greater than the one before."""
        if not self._ascending or skus.len() == 0:
            return
        if self._last_sku is not None and not skus[0] > self._last_sku:
            self._ascending = False
        elif skus.len() > 1:
            # Per piece, so both slices share one chunk and compare without copying.
            self._ascending = bool((skus.slice(1) > skus.slice(0, skus.len() - 1)).all())
        self._last_sku = skus[-1]

    def _empty_raw(self) -> pl.DataFrame:
        return pl.DataFrame(
            schema={"sku": pl.String, "price": pl.String, "currency": pl.String, "stock": pl.String}
            | {"_line": pl.Int64}
        )

    def _move_duplicates(
        self, clean: pl.DataFrame, suspect: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Clean rows whose SKU occurs more than once go to validate_offers, which rules on repeats."""
        if suspect.height == 0 and self._ascending:
            return clean, suspect  # the usual export, sorted by SKU: no repeats, nothing to hash
        clean_hashes = clean.get_column("sku").hash()
        keys = pl.concat([clean_hashes, suspect.get_column("sku").str.strip_chars().drop_nulls().hash()])
        # Hashes, not strings, because that is 10x faster; a 64-bit collision only sends an
        # innocent row down the exact path.
        if keys.n_unique() == keys.len():
            return clean, suspect
        repeated = keys.filter(keys.is_duplicated()).unique()
        moving = clean_hashes.is_in(repeated.implode())
        if not moving.any():
            return clean, suspect
        moved = clean.filter(moving).select(
            "sku",
            price=pl.col("price").cast(pl.String),
            currency="currency",
            stock=pl.col("stock").cast(pl.String),
            _line=pl.lit(None, dtype=pl.Int64),
        )
        return clean.filter(~moving), pl.concat([suspect, moved], how="vertical_relaxed")

    def _split_bad_stock(self, suspect: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Reject stock text that is not an integer (validate_offers takes stock as Int64)."""
        text = pl.col("stock").str.strip_chars()
        parsed = suspect.with_columns(_stock=text.cast(pl.Int64, strict=False))
        bad = ((text.str.len_bytes() > 0) & pl.col("_stock").is_null()).fill_null(False)
        rejects = parsed.filter(bad).select(
            supplier=pl.lit(self._supplier, dtype=pl.String),
            sku=pl.col("sku"),
            reason=pl.lit(STOCK_NOT_INTEGER),
            raw=self._raw_json(),
            fetched_at=pl.lit(self._fetched_at, dtype=UTC_TS),
        )
        return parsed.filter(~bad), rejects

    def _raw_json(self) -> pl.Expr:
        return pl.struct(
            pl.col("_line").alias("line"),
            pl.col("sku"),
            pl.col("price"),
            pl.col("currency"),
            pl.col("stock"),
        ).struct.json_encode()

    def _to_raw_offers(self, suspect: pl.DataFrame) -> pl.DataFrame:
        return suspect.select(
            "sku",
            "price",
            "currency",
            stock="_stock",
            in_stock=pl.lit(True),
            raw=self._raw_json(),
        )


def _one_of(column: pl.Expr, values: list[str]) -> pl.Expr:
    """Membership; a few equality tests measure ~5x faster than is_in for the handful of currencies."""
    if not values or len(values) > 8:
        return column.is_in(values)
    return pl.any_horizontal([column == value for value in values])


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _empty_clean() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "sku": pl.String,
            "price": MONEY,
            "currency": pl.String,
            "stock": pl.Int64,
            "in_stock": pl.Boolean,
        }
    )


def parse_price_file(
    plaintext: bytes,
    cfg: CdnFileConfig,
    *,
    supplier: str,
    fetched_at: datetime,
    known_currencies: Collection[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a decrypted price file into (offers per OFFERS_SCHEMA, quarantine per QUARANTINE_SCHEMA).

    The header must equal cfg.expected_header (UnexpectedHeaderError otherwise). known_currencies
    None accepts any three-letter code.
    """
    parser = PriceFileParser(cfg, supplier=supplier, fetched_at=fetched_at, known_currencies=known_currencies)
    parser.feed(plaintext)
    return parser.finish()


@dataclass(frozen=True)
class PriceFile:
    """A decrypted, parsed and validated price file."""

    offers: pl.DataFrame
    quarantine: pl.DataFrame
    ciphertext_bytes: int
    plaintext_bytes: int
    base64: bool
    rows_read: int


def decrypt_price_file(
    source: BinaryIO,
    cfg: CdnFileConfig,
    passphrase: bytes,
    *,
    supplier: str,
    fetched_at: datetime,
    known_currencies: Collection[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> PriceFile:
    """Decrypt and parse an encrypted price file in bounded chunks (raises CdnFeedError subclasses)."""
    decryptor = OpenSSLDecryptor(
        source,
        passphrase,
        kdf=cfg.kdf,
        digest=cfg.digest,
        iterations=cfg.iterations,
        base64=cfg.base64,
        chunk_size=chunk_size,
    )
    parser = PriceFileParser(cfg, supplier=supplier, fetched_at=fetched_at, known_currencies=known_currencies)
    pieces = iter(decryptor)
    try:
        for piece in pieces:
            parser.feed(piece)
    except UnexpectedHeaderError:
        # A wrong key fails the padding check 255 times in 256: report that cause when it does.
        for _ in pieces:
            pass
        raise
    offers, quarantine = parser.finish()
    return PriceFile(
        offers=offers,
        quarantine=quarantine,
        ciphertext_bytes=decryptor.ciphertext_bytes,
        plaintext_bytes=decryptor.plaintext_bytes,
        base64=bool(decryptor.is_base64),
        rows_read=parser.rows_read,
    )


__all__ = [
    "CdnFeedError",
    "CdnFile",
    "CdnFileClient",
    "Download",
    "PriceFile",
    "PriceFileParser",
    "check_sku_shrink",
    "decrypt_price_file",
    "parse_price_file",
    "verify_checksum",
    "verify_signature",
]
