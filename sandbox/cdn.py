"""Sandbox CDN: a supplier's price file encrypted the way `openssl enc -aes-256-cbc` makes it.

Routes (mounted under `/cdn`):
- `GET /<supplier>/prices.csv.enc`: `sku,price,currency,stock` for `world.offers(supplier)`, encrypted,
  with `ETag` (hash of the served bytes) and `Last-Modified`; `If-None-Match` (or, without it,
  `If-Modified-Since`) answers 304.
- `GET /<supplier>/prices.csv.enc.sha256`: `sha256sum` output for the file as published (before the
  `corrupted`/`truncated` faults, which model damage on the way); `GET /<supplier>/prices.csv.enc.sig`:
  its detached ECDSA P-256 signature over SHA-256 (DER, as `openssl dgst -sha256 -sign` writes), whose
  public key is `signing_public_key_pem()`.
- `POST /<supplier>/regenerate`: re-encrypt with a new salt, as a supplier's nightly export would: new
  bytes, new ETag. Moving the market (`POST /_control/market`) changes the rows too.

How the file is made, per supplier: the registry entry's `cdn` settings (kdf, digest, iterations,
base64, passphrase env var; default registry or `$SUPPLIER_REGISTRY`), each overridable through
`world.faults[<supplier>]` (`POST /_control/faults`):
- `kdf`: "pbkdf2" | "evp_bytestokey"; `digest`: "sha256" | "sha512" | "sha1" | "md5"; `iterations`
- `base64`: "no" | "wrapped" (`-a`) | "one_line" (`-a -A`); the registry's "yes"/"auto" mean "wrapped"
- `passphrase`: serve with this passphrase instead of the env var's
Fault modes, same place:
- `rekeyed`: true (or a passphrase string): the supplier re-keyed the file; our passphrase no longer fits
- `truncated`: true (keeps 60 %) or a fraction in (0, 1): the file is cut short
- `corrupted`: true (1 byte) or a count: bytes flipped in the middle of the ciphertext
- `bad_rows`: N: N rows carry the price "n/a"
- `drop_rows`: a share (0..1): the export leaves out that share of its rows (well-formed, checksum and
  signature match: the supplier's own mistake)
- `no_checksum` / `no_signature`: true: 404 for the side file; `bad_signature`: true: a signature of
  other content
- `outage`: true: 503 (with `Retry-After: <retry_after>` when `retry_after` is set)
- `status`: an HTTP status to answer with instead (404, 403, 500 ...)
- `latency_ms`: delay before answering; `no_etag`: true: omit the ETag header
The passphrase comes from the environment variable the registry names (the demo and tests set
`DELTA_CDN_PASSPHRASE=sandbox-delta-passphrase`); unset, it is `sandbox-<supplier>-passphrase`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import cache
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resources.cdn_crypto import encrypt_openssl, to_openssl_base64
from resources.config import CdnFileConfig, ConfigError, load_registry
from sandbox.world import SUPPLIERS, World

HEADER = "sku,price,currency,stock"


@cache
def _registry_cdn(registry_path: str | None) -> dict[str, CdnFileConfig]:
    try:
        registry = load_registry(registry_path)
    except ConfigError:
        return {}
    return {entry.id: entry.cdn for entry in registry.suppliers if entry.cdn is not None}


@dataclass(frozen=True)
class FileSettings:
    """How the served file is encrypted and which faults apply."""

    passphrase: str
    kdf: Literal["pbkdf2", "evp_bytestokey"]
    digest: Literal["sha256", "sha512", "sha1", "md5"]
    iterations: int
    base64: Literal["no", "wrapped", "one_line"]
    truncated: float | None
    corrupted: int
    bad_rows: int
    drop_rows: float = 0.0

    @classmethod
    def resolve(cls, supplier_id: str, faults: dict[str, Any]) -> FileSettings:
        """Registry settings for the supplier, overridden by its fault settings."""
        cdn = _registry_cdn(os.environ.get("SUPPLIER_REGISTRY")).get(supplier_id)
        env_name = cdn.passphrase_env if cdn else f"{supplier_id.upper()}_CDN_PASSPHRASE"
        passphrase = (
            faults.get("passphrase") or os.environ.get(env_name) or f"sandbox-{supplier_id}-passphrase"
        )
        rekeyed = faults.get("rekeyed")
        if rekeyed:
            passphrase = rekeyed if isinstance(rekeyed, str) else f"{passphrase}-rekeyed"
        registry_b64 = {"no": "no", "yes": "wrapped", "auto": "wrapped"}[cdn.base64] if cdn else "no"
        truncated = faults.get("truncated")
        corrupted = faults.get("corrupted")
        return cls(
            passphrase=passphrase,
            kdf=faults.get("kdf") or (cdn.kdf if cdn else "pbkdf2"),
            digest=faults.get("digest") or (cdn.digest if cdn else "sha256"),
            iterations=int(faults.get("iterations") or (cdn.iterations if cdn else 10000)),
            base64=faults.get("base64") or registry_b64,
            truncated=(0.6 if truncated is True else float(truncated)) if truncated else None,
            corrupted=(1 if corrupted is True else int(corrupted)) if corrupted else 0,
            bad_rows=int(faults.get("bad_rows") or 0),
            drop_rows=float(faults.get("drop_rows") or 0.0),
        )


@dataclass
class ServedFile:
    """One generated file and its validators."""

    body: bytes
    etag: str
    last_modified: datetime
    # SHA-256 of the file as the supplier published it: before the corruption/truncation faults, which
    # model damage on the way (so the published checksum and signature then do not match).
    published_sha256: str = ""


@dataclass
class _CdnState:
    revisions: dict[str, int] = field(default_factory=dict)
    files: dict[tuple[Any, ...], ServedFile] = field(default_factory=dict)
    last_modified: dict[str, datetime] = field(default_factory=dict)

    def next_last_modified(self, supplier_id: str) -> datetime:
        """Now, at HTTP's one-second resolution, but always later than this supplier's previous file."""
        now = datetime.now(UTC).replace(microsecond=0)
        previous = self.last_modified.get(supplier_id)
        if previous is not None and now <= previous:
            now = previous + timedelta(seconds=1)
        self.last_modified[supplier_id] = now
        return now


def signing_key() -> ec.EllipticCurvePrivateKey:
    """The sandbox CDN's ECDSA P-256 signing key (fixed: the tests' registries name its public key)."""
    secret = int.from_bytes(hashlib.sha256(b"sandbox-cdn-signing-key").digest(), "big")
    return ec.derive_private_key(secret % (2**255), ec.SECP256R1())


def signing_public_key_pem() -> str:
    """The PEM public key a registry names to verify the sandbox CDN's signatures."""
    public = signing_key().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign_sha256(sha256_hex: str) -> bytes:
    """`openssl dgst -sha256 -sign key.pem` of a file whose SHA-256 is given: a DER ECDSA signature."""
    digest = bytes.fromhex(sha256_hex)
    return signing_key().sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def price_csv(world: World, supplier_id: str, *, bad_rows: int = 0, drop_rows: float = 0.0) -> bytes:
    """The plaintext price file for a supplier, rows sorted by SKU (`drop_rows`: that share left out)."""
    lines = [HEADER]
    offers = sorted(world.offers(supplier_id).items())
    if drop_rows:
        keep = len(offers) - int(len(offers) * drop_rows)
        offers = offers[:keep]  # a broken export: the tail of the file is missing, yet well-formed
    for index, (sku, offer) in enumerate(offers):
        stock = "" if offer.stock is None else str(offer.stock)
        price = "n/a" if index < bad_rows else str(offer.price)
        lines.append(f"{sku},{price},{offer.currency},{stock}")
    return ("\n".join(lines) + "\n").encode()


def build_file(world: World, supplier_id: str, settings: FileSettings, revision: int) -> bytes:
    """Encrypt the supplier's price file per settings, then apply the truncation/corruption faults."""
    rng = world.rng(f"cdn:{supplier_id}:{revision}")
    salt = bytes(rng.getrandbits(8) for _ in range(8))
    body = encrypt_openssl(
        price_csv(world, supplier_id, bad_rows=settings.bad_rows, drop_rows=settings.drop_rows),
        settings.passphrase,
        kdf=settings.kdf,
        digest=settings.digest,
        iterations=settings.iterations,
        salt=salt,
    )
    if settings.corrupted:
        data = bytearray(body)
        # Flip ciphertext bytes evenly through the middle half, away from the header and final block.
        start, span = len(data) // 4, max(1, len(data) // 2)
        for k in range(settings.corrupted):
            data[start + (k * span) // settings.corrupted] ^= 0x5A
        body = bytes(data)
    if settings.base64 != "no":
        body = to_openssl_base64(body, one_line=settings.base64 == "one_line")
    if settings.truncated:
        # Cut off a block boundary so the damage is a partial block, as an interrupted upload leaves.
        cut = int(len(body) * settings.truncated)
        body = body[: cut - 5 if cut % 16 == 0 else cut]
    return body


def routes(world: World) -> list[Route]:
    """The sandbox CDN's routes, bound to a world."""
    state = _CdnState()

    def current_file(supplier_id: str) -> ServedFile:
        faults = world.faults.get(supplier_id, {})
        settings = FileSettings.resolve(supplier_id, faults)
        revision = state.revisions.get(supplier_id, 0)
        key = (supplier_id, world.seed, world.catalog_size, world.generation, revision, settings)
        served = state.files.get(key)
        if served is None:
            body = build_file(world, supplier_id, settings, revision)
            published = build_file(
                world, supplier_id, replace(settings, truncated=None, corrupted=0), revision
            )
            served = ServedFile(
                body=body,
                etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
                last_modified=state.next_last_modified(supplier_id),
                published_sha256=hashlib.sha256(published).hexdigest(),
            )
            state.files[key] = served
        return served

    async def get_checksum(request: Request) -> Response:
        supplier_id = request.path_params["supplier_id"]
        faults = world.faults.get(supplier_id, {})
        if supplier_id not in SUPPLIERS or faults.get("no_checksum"):
            return JSONResponse({"error": f"no checksum for {supplier_id}"}, status_code=404)
        world.counters[f"cdn.{supplier_id}.checksums"] += 1
        return Response(
            f"{current_file(supplier_id).published_sha256}  prices.csv.enc\n", media_type="text/plain"
        )

    async def get_signature(request: Request) -> Response:
        supplier_id = request.path_params["supplier_id"]
        faults = world.faults.get(supplier_id, {})
        if supplier_id not in SUPPLIERS or faults.get("no_signature"):
            return JSONResponse({"error": f"no signature for {supplier_id}"}, status_code=404)
        world.counters[f"cdn.{supplier_id}.signatures"] += 1
        signed = current_file(supplier_id).published_sha256
        if faults.get("bad_signature"):
            signed = hashlib.sha256(b"some other file").hexdigest()  # signed by the key, wrong content
        return Response(sign_sha256(signed), media_type="application/octet-stream")

    async def get_file(request: Request) -> Response:
        supplier_id = request.path_params["supplier_id"]
        if supplier_id not in SUPPLIERS:
            return JSONResponse({"error": f"no file for {supplier_id}"}, status_code=404)
        faults = world.faults.get(supplier_id, {})
        world.counters[f"cdn.{supplier_id}.requests"] += 1
        if faults.get("latency_ms"):
            await asyncio.sleep(float(faults["latency_ms"]) / 1000)
        if faults.get("status"):
            world.counters[f"cdn.{supplier_id}.errors"] += 1
            return Response(f"fault status {faults['status']}", status_code=int(faults["status"]))
        if faults.get("outage"):
            world.counters[f"cdn.{supplier_id}.errors"] += 1
            retry_after = faults.get("retry_after")
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return Response("CDN outage", status_code=503, headers=headers)
        served = current_file(supplier_id)
        headers = {"Last-Modified": format_datetime(served.last_modified, usegmt=True)}
        if not faults.get("no_etag"):
            headers["ETag"] = served.etag
        if _not_modified(request, served, use_etag=not faults.get("no_etag")):
            world.counters[f"cdn.{supplier_id}.not_modified"] += 1
            return Response(status_code=304, headers=headers)
        world.counters[f"cdn.{supplier_id}.downloads"] += 1
        return Response(served.body, media_type="application/octet-stream", headers=headers)

    async def regenerate(request: Request) -> JSONResponse:
        supplier_id = request.path_params["supplier_id"]
        if supplier_id not in SUPPLIERS:
            return JSONResponse({"error": f"no file for {supplier_id}"}, status_code=404)
        state.revisions[supplier_id] = state.revisions.get(supplier_id, 0) + 1
        served = current_file(supplier_id)
        return JSONResponse({"revision": state.revisions[supplier_id], "etag": served.etag})

    return [
        Route("/{supplier_id}/prices.csv.enc.sha256", get_checksum, methods=["GET"]),
        Route("/{supplier_id}/prices.csv.enc.sig", get_signature, methods=["GET"]),
        Route("/{supplier_id}/prices.csv.enc", get_file, methods=["GET"]),
        Route("/{supplier_id}/regenerate", regenerate, methods=["POST"]),
    ]


def _not_modified(request: Request, served: ServedFile, *, use_etag: bool) -> bool:
    """RFC 9110 conditional GET: If-None-Match wins; If-Modified-Since only without it."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return use_etag and (served.etag in tags or "*" in tags)
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return served.last_modified <= since
    return False
