"""OpenSSL `enc -aes-256-cbc` compatible decryption (and encryption) of CDN price files (docs/cdn_feed.md).

File layout: `Salted__` + 8-byte salt + AES-256-CBC ciphertext with PKCS#7 padding, optionally base64
(`-a`: 64-character lines; `-a -A`: one line). Neither the KDF nor its digest is in the file, the
registry says which: PBKDF2-HMAC(digest, iterations) (`-pbkdf2`, `-iter`) or OpenSSL's legacy
`EVP_BytesToKey` with count 1 (`-md sha256`, OpenSSL's default since 1.1.0, or `-md md5`).

Every failure is a `CdnFeedError` whose `cause` names it; no message ever contains the passphrase.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import os
from collections.abc import Iterator
from typing import BinaryIO, ClassVar, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAGIC = b"Salted__"
# base64 of "Salted__" with the first salt bits: every `openssl enc -a` file starts with it.
MAGIC_B64 = b"U2FsdGVkX1"
SALT_LEN = 8
BLOCK = 16
KEY_LEN = 32
IV_LEN = 16
# Measured: 2-4 MiB pieces parse fastest (they stay in cache); larger ones are slower, not faster.
DEFAULT_CHUNK = 4 << 20
_WHITESPACE = b" \t\r\n\v\f"
# Printable ASCII, tab, CR, LF: 16 random bytes are all of these with odds of about 2e-7.
_TEXT_BYTES = frozenset([9, 10, 13, *range(32, 127)])

Kdf = Literal["pbkdf2", "evp_bytestokey"]
Digest = Literal["sha256", "sha512", "sha1", "md5"]
Base64Mode = Literal["auto", "yes", "no"]
Cause = Literal[
    "bad_magic",
    "bad_decrypt",
    "unexpected_header",
    "truncated",
    "too_large",
    "http_error",
    "bad_rows",
    "integrity",
    "held_shrunk",
]


class CdnFeedError(Exception):
    """A CDN price file could not be used; `cause` names why, the message says what to check."""

    cause: ClassVar[Cause]

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.cause}: {detail}")
        self.detail = detail


class BadMagicError(CdnFeedError):
    """The file is not OpenSSL `enc` output (no `Salted__` header, or broken base64)."""

    cause = "bad_magic"


class BadDecryptError(CdnFeedError):
    """Decryption failed the padding check: wrong passphrase, KDF, digest or iteration count."""

    cause = "bad_decrypt"


class UnexpectedHeaderError(CdnFeedError):
    """The plaintext does not start with the expected CSV header (also catches wrong keys ~1/256)."""

    cause = "unexpected_header"


class TruncatedError(CdnFeedError):
    """The file ends early: partial block, missing padding, or a download cut short."""

    cause = "truncated"


class TooLargeError(CdnFeedError):
    """The file is larger than the configured `max_bytes`."""

    cause = "too_large"


class CdnHttpError(CdnFeedError):
    """The CDN answered with an error status or could not be reached (after retries)."""

    cause = "http_error"

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code


class BadRowsError(CdnFeedError):
    """The file decrypted but too many of its rows failed validation to trust it."""

    cause = "bad_rows"


class IntegrityError(CdnFeedError):
    """The file does not match the checksum or detached signature the supplier publishes beside it."""

    cause = "integrity"


class ShrunkFileError(CdnFeedError):
    """Without a checksum or signature, the file lost more of the previous file's SKUs than allowed:
    held, not cached, until it is fixed or accepted."""

    cause = "held_shrunk"

    def __init__(self, detail: str, *, sha256: str | None, lost: int, previous: int) -> None:
        super().__init__(detail)
        self.sha256 = sha256
        self.lost = lost
        self.previous = previous


def derive_key_iv(
    passphrase: bytes, salt: bytes, *, kdf: Kdf, digest: Digest, iterations: int
) -> tuple[bytes, bytes]:
    """The AES-256 key and CBC IV OpenSSL derives from a passphrase and salt."""
    if kdf == "pbkdf2":
        material = hashlib.pbkdf2_hmac(digest, passphrase, salt, iterations, KEY_LEN + IV_LEN)
    elif kdf == "evp_bytestokey":
        # EVP_BytesToKey with count 1: D_i = H(D_{i-1} || passphrase || salt), concatenated.
        material, block = b"", b""
        while len(material) < KEY_LEN + IV_LEN:
            block = hashlib.new(digest, block + passphrase + salt).digest()
            material += block
    else:
        raise ValueError(f"unknown kdf {kdf!r}")
    return material[:KEY_LEN], material[KEY_LEN : KEY_LEN + IV_LEN]


def _as_bytes(passphrase: str | bytes) -> bytes:
    return passphrase.encode() if isinstance(passphrase, str) else passphrase


def encrypt_openssl(
    plaintext: bytes,
    passphrase: str | bytes,
    *,
    kdf: Kdf = "pbkdf2",
    digest: Digest = "sha256",
    iterations: int = 10000,
    base64: Literal["no", "wrapped", "one_line"] = "no",
    salt: bytes | None = None,
) -> bytes:
    """Encrypt exactly as `openssl enc -aes-256-cbc [-pbkdf2 -iter N] -md D [-a [-A]]` does."""
    salt = os.urandom(SALT_LEN) if salt is None else salt
    if len(salt) != SALT_LEN:
        raise ValueError(f"salt must be {SALT_LEN} bytes")
    key, iv = derive_key_iv(_as_bytes(passphrase), salt, kdf=kdf, digest=digest, iterations=iterations)
    pad = BLOCK - len(plaintext) % BLOCK
    body = len(plaintext) - len(plaintext) % BLOCK
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    # update_into wants block_size - 1 spare bytes after the output it writes.
    out = bytearray(2 * SALT_LEN + body + 2 * BLOCK - 1)
    out[: len(MAGIC)] = MAGIC
    out[len(MAGIC) : 2 * SALT_LEN] = salt
    with memoryview(out) as view:
        written = encryptor.update_into(memoryview(plaintext)[:body], view[2 * SALT_LEN :])
        tail = bytes(plaintext[body:]) + bytes([pad]) * pad
        written += encryptor.update_into(tail, view[2 * SALT_LEN + written :])
    encryptor.finalize()
    del out[2 * SALT_LEN + written :]
    if base64 == "no":
        return bytes(out)
    return to_openssl_base64(out, one_line=base64 == "one_line")


def to_openssl_base64(data: bytes | bytearray, *, one_line: bool = False) -> bytes:
    """Base64 as `openssl enc -a` writes it: 64-character lines, or one line without newline (`-A`)."""
    text = binascii.b2a_base64(data, newline=False)
    if one_line:
        return text
    return b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))


def detect_base64(head: bytes, mode: Base64Mode) -> bool:
    """Whether a file starting with `head` is base64 (`-a`), per the configured mode."""
    if mode != "auto":
        return mode == "yes"
    stripped = head.lstrip(_WHITESPACE)
    if stripped.startswith(MAGIC) or stripped.startswith(MAGIC_B64):
        return not stripped.startswith(MAGIC)
    if not stripped or MAGIC.startswith(stripped) or MAGIC_B64.startswith(stripped):
        raise TruncatedError(f"file has only {len(head)} bytes, not even the OpenSSL header")
    raise BadMagicError("file does not start with OpenSSL's 'Salted__' header (raw or base64)")


def looks_like_text(data: bytes | memoryview) -> bool:
    """Whether bytes are plain ASCII text; a wrong key gives random bytes that almost never are."""
    return all(byte in _TEXT_BYTES for byte in bytes(data))


def _check_padding(last_block: memoryview) -> int:
    """The PKCS#7 pad length of the final block, or raise naming why it is wrong."""
    pad = last_block[-1]
    if 1 <= pad <= BLOCK and all(byte == pad for byte in last_block[BLOCK - pad :]):
        return pad
    if looks_like_text(last_block):
        # The right key decrypts a file cut at a block boundary to text with no padding after it.
        raise TruncatedError("file ends without PKCS#7 padding (cut at a block boundary)")
    raise BadDecryptError("padding check failed: wrong passphrase, KDF, digest or iteration count")


class _Base64Reader:
    """Decodes an `openssl -a` stream (wrapped or one line) chunk by chunk."""

    def __init__(self, source: BinaryIO, head: bytes) -> None:
        self._source = source
        self._pending = head
        self._carry = b""
        self.encoded_bytes = 0

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        """Decoded bytes, in pieces of about chunk_size * 3/4."""
        while True:
            raw = self._pending or self._source.read(chunk_size)
            self._pending = b""
            if not raw:
                break
            self.encoded_bytes += len(raw)
            text = self._carry + raw.translate(None, _WHITESPACE)
            usable = len(text) - len(text) % 4
            self._carry = text[usable:]
            if usable:
                yield self._decode(text[:usable])
        if self._carry:
            raise TruncatedError("base64 text ends mid-group: the file was cut short")

    @staticmethod
    def _decode(text: bytes) -> bytes:
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error as exc:
            raise BadMagicError(f"file is not valid base64 ({exc})") from None


def _raw_chunks(source: BinaryIO, head: bytes, chunk_size: int) -> Iterator[memoryview]:
    """The file's bytes, read into one reused buffer (each view is valid until the next)."""
    if head:
        yield memoryview(head)
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    while True:
        filled = 0
        while filled < chunk_size:
            got = source.readinto(view[filled:])
            if not got:
                break
            filled += got
        if filled:
            yield view[:filled]
        if filled < chunk_size:
            return


class OpenSSLDecryptor:
    """Streams the plaintext of an OpenSSL `enc -aes-256-cbc` file with a bounded, reused buffer.

    Iterating yields memoryviews of plaintext, each valid until the next step; the final piece comes
    only after the PKCS#7 padding was checked, so a consumer sees an error before the file's end.
    """

    def __init__(
        self,
        source: BinaryIO,
        passphrase: str | bytes,
        *,
        kdf: Kdf = "pbkdf2",
        digest: Digest = "sha256",
        iterations: int = 10000,
        base64: Base64Mode = "auto",
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self._source = source
        self._passphrase = _as_bytes(passphrase)
        self._kdf: Kdf = kdf
        self._digest: Digest = digest
        self._iterations = iterations
        self._base64_mode: Base64Mode = base64
        self._chunk = max(BLOCK, chunk_size - chunk_size % BLOCK)
        self.is_base64: bool | None = None
        self.ciphertext_bytes = 0
        self.plaintext_bytes = 0

    def __repr__(self) -> str:
        return f"OpenSSLDecryptor(kdf={self._kdf!r}, digest={self._digest!r}, iterations={self._iterations})"

    def _decoded_chunks(self) -> Iterator[bytes | memoryview]:
        head = self._source.read(64)
        self.is_base64 = detect_base64(head, self._base64_mode)
        if self.is_base64:
            # Decoded pieces are 3/4 of what was read, so read a third more to keep chunks full-size.
            yield from _Base64Reader(self._source, head).chunks(self._chunk * 4 // 3)
        else:
            yield from _raw_chunks(self._source, head, self._chunk)

    def __iter__(self) -> Iterator[memoryview]:
        chunks = self._decoded_chunks()
        header = bytearray()
        first: bytes | memoryview = b""
        for piece in chunks:
            need = 2 * SALT_LEN - len(header)
            header += piece[:need]
            if len(header) == 2 * SALT_LEN:
                first = piece[need:]
                break
        if len(header) < 2 * SALT_LEN:
            raise TruncatedError(f"file has only {len(header)} bytes, not even the OpenSSL header")
        if header[: len(MAGIC)] != MAGIC:
            raise BadMagicError("file does not start with OpenSSL's 'Salted__' header")
        key, iv = derive_key_iv(
            self._passphrase,
            bytes(header[len(MAGIC) :]),
            kdf=self._kdf,
            digest=self._digest,
            iterations=self._iterations,
        )
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        # One preallocated output buffer: the last 16 plaintext bytes are held back at its start
        # because they may be the padded final block; update_into needs len(in) + 15 spare bytes.
        out = bytearray(self._chunk + 3 * BLOCK)
        out_view = memoryview(out)
        held = 0
        for piece in _chain(first, chunks):
            if not len(piece):
                continue
            self.ciphertext_bytes += len(piece)
            if held + len(piece) + BLOCK > len(out):
                out = bytearray(held + len(piece) + 2 * BLOCK)
                out[:held] = out_view[:held]
                out_view = memoryview(out)
            written = decryptor.update_into(piece, out_view[held:])
            available = held + written
            emit = max(0, available - BLOCK)
            if emit:
                self.plaintext_bytes += emit
                yield out_view[:emit]
                out_view[: available - emit] = out_view[emit:available]
            held = available - emit
        if self.ciphertext_bytes == 0:
            raise TruncatedError("file has no ciphertext after the OpenSSL header")
        if self.ciphertext_bytes % BLOCK:
            raise TruncatedError(
                f"ciphertext is {self.ciphertext_bytes} bytes, not a multiple of {BLOCK}: file cut short"
            )
        decryptor.finalize()
        assert held == BLOCK, "a whole-block ciphertext leaves exactly one block held back"
        pad = _check_padding(out_view[:BLOCK])
        if BLOCK - pad:
            self.plaintext_bytes += BLOCK - pad
            yield out_view[: BLOCK - pad]


def _chain(first: bytes | memoryview, rest: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    yield first
    yield from rest


def decrypt_openssl(
    data: bytes | bytearray | memoryview,
    passphrase: str | bytes,
    *,
    kdf: Kdf = "pbkdf2",
    digest: Digest = "sha256",
    iterations: int = 10000,
    base64: Base64Mode = "auto",
) -> bytes:
    """Decrypt a whole OpenSSL `enc` file held in memory and return the plaintext."""
    raw = memoryview(data).cast("B")
    stream = OpenSSLDecryptor(
        io.BytesIO(raw),
        passphrase,
        kdf=kdf,
        digest=digest,
        iterations=iterations,
        base64=base64,
        chunk_size=max(BLOCK, len(raw) + BLOCK),
    )
    return b"".join(bytes(piece) for piece in stream)
