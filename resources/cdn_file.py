"""`CdnFile`, the resource for suppliers' encrypted CDN price files: URLs, auth, passphrases, integrity.

The download client is in resources/cdn_download.py, the parser in resources/cdn_parse.py; the CDN
file's contract (encryption, integrity files, shrink guard) is docs/cdn_feed.md.
"""

from __future__ import annotations

import base64
import contextlib
import re
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from dagster import ConfigurableResource

from resources.cdn_crypto import (
    CdnHttpError,
    IntegrityError,
    ShrunkFileError,
)
from resources.cdn_download import CdnFileClient, Download, safe_url
from resources.config import ConfigError, SupplierEntry
from resources.secrets import read_secret


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
                download.sha256, published, source=safe_url(self.side_url(entry, cdn.checksum_path))
            )
            verified.append("sha256")
        if cdn.signature_path and cdn.signature_public_key:
            url = self.side_url(entry, cdn.signature_path)
            signature = _read_side_file(client, url, "signature")
            verify_signature(
                download.path, download.sha256, signature, cdn.signature_public_key, source=safe_url(url)
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
                raise IntegrityError(f"the {what} file {safe_url(url)} is missing or larger than 64 KiB")
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


__all__ = ["CdnFile", "check_sku_shrink", "verify_checksum", "verify_signature"]
