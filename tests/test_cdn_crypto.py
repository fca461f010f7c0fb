"""OpenSSL-compatible decryption, the price-file parser, and the cache they feed (docs/architecture.md §8).

Files are made by the real `openssl enc` CLI in every mode the registry supports.
"""

from __future__ import annotations

import csv
import io
import random
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing_assets.supplier_files import cache_key, cache_price_file, quarantine_key
from resources.cdn_crypto import (
    BadDecryptError,
    BadMagicError,
    CdnFeedError,
    OpenSSLDecryptor,
    TruncatedError,
    UnexpectedHeaderError,
    decrypt_openssl,
    derive_key_iv,
    encrypt_openssl,
)
from resources.cdn_parse import STOCK_NOT_INTEGER, decrypt_price_file, parse_price_file
from resources.cdn_state import CdnCacheState
from resources.config import CdnFileConfig, SupplierEntry
from resources.offer_validation import validate_offers
from resources.schemas import OFFERS_SCHEMA, QUARANTINE_SCHEMA
from resources.warehouse import Warehouse

PASSPHRASE = "correct horse battery staple"
FETCHED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
KNOWN = {"EUR", "USD", "GBP"}

# (openssl arguments, registry settings) for every supported key derivation.
MODES = {
    "pbkdf2-default": (["-pbkdf2"], {"kdf": "pbkdf2", "digest": "sha256", "iterations": 10000}),
    "pbkdf2-sha512-100k": (
        ["-pbkdf2", "-iter", "100000", "-md", "sha512"],
        {"kdf": "pbkdf2", "digest": "sha512", "iterations": 100000},
    ),
    "legacy-sha256": (["-md", "sha256"], {"kdf": "evp_bytestokey", "digest": "sha256"}),
    "legacy-md5": (["-md", "md5"], {"kdf": "evp_bytestokey", "digest": "md5"}),
}
ENCODINGS = {"raw": [], "base64": ["-a"], "base64-one-line": ["-a", "-A"]}


def openssl() -> str:
    """The openssl CLI; the project's setup installs it, so its absence is a failure, not a skip."""
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("the openssl CLI is required for these tests (apt-get install openssl)")
    return path


def openssl_encrypt(
    plaintext: bytes, args: list[str], passphrase: str = PASSPHRASE, salt: bytes | None = None
) -> bytes:
    """Encrypt with the real `openssl enc -aes-256-cbc`; the passphrase goes through the environment.

    With a salt the output is deterministic, so a wrong key fails the same way on every run.
    """
    salt_args = ["-S", salt.hex()] if salt is not None else []
    if salt is not None and any(arg in args for arg in ("-a", "-A")):
        raise ValueError("a fixed salt is only supported for raw output")
    result = subprocess.run(
        [openssl(), "enc", "-aes-256-cbc", "-salt", "-pass", "env:CDN_TEST_PASS", *salt_args, *args],
        input=plaintext,
        capture_output=True,
        check=True,
        env={"CDN_TEST_PASS": passphrase, "PATH": "/usr/bin:/bin"},
    )
    out = result.stdout
    if salt is not None and not out.startswith(b"Salted__"):
        # OpenSSL 3.0 leaves the header out when the salt is given with -S; the file format has it.
        out = b"Salted__" + salt + out
    return out


def openssl_decrypt(data: bytes, args: list[str], passphrase: str = PASSPHRASE) -> bytes:
    """Decrypt with the real `openssl enc -d`."""
    result = subprocess.run(
        [openssl(), "enc", "-d", "-aes-256-cbc", "-pass", "env:CDN_TEST_PASS", *args],
        input=data,
        capture_output=True,
        check=True,
        env={"CDN_TEST_PASS": passphrase, "PATH": "/usr/bin:/bin"},
    )
    return result.stdout


def price_csv(rows: int, seed: int = 1) -> bytes:
    """A deterministic price file with unknown stocks and several currencies."""
    rng = random.Random(seed)
    lines = ["sku,price,currency,stock"]
    for i in range(rows):
        stock = "" if rng.random() < 0.15 else str(rng.randrange(0, 80))
        price = f"{rng.randrange(1, 2_000_000) / 100:.2f}"
        lines.append(f"SKU-{i:06d},{price},{rng.choice(sorted(KNOWN))},{stock}")
    return ("\n".join(lines) + "\n").encode()


def expected_rows(plaintext: bytes) -> list[tuple[str, Decimal, str, int | None]]:
    """The rows of a clean price file, read with the csv module (the oracle)."""
    reader = csv.DictReader(io.StringIO(plaintext.decode()))
    return sorted(
        (row["sku"], Decimal(row["price"]), row["currency"], int(row["stock"]) if row["stock"] else None)
        for row in reader
    )


def offer_rows(offers: pl.DataFrame) -> list[tuple[str, Decimal, str, int | None]]:
    """Offers as comparable tuples."""
    return sorted(offers.select("sku", "price", "currency", "stock").iter_rows())


def cdn_config(**overrides: object) -> CdnFileConfig:
    """A registry cdn section (base64 auto-detected unless overridden)."""
    return CdnFileConfig.model_validate({"path": "/f.csv.enc", "passphrase_env": "CDN_PASS", **overrides})


def supplier(cfg: CdnFileConfig) -> SupplierEntry:
    """A cdn_file registry entry around a cdn section."""
    return SupplierEntry(id="delta", kind="cdn_file", base_url="http://127.0.0.1:9", cdn=cfg)


def decrypt_file(data: bytes, cfg: CdnFileConfig, passphrase: str = PASSPHRASE, **kwargs: object):
    """decrypt_price_file over bytes in memory."""
    return decrypt_price_file(
        io.BytesIO(data),
        cfg,
        passphrase.encode(),
        supplier="delta",
        fetched_at=FETCHED_AT,
        known_currencies=KNOWN,
        **kwargs,
    )


PLAINTEXT = price_csv(3000)


# ---------------------------------------------------------------- real openssl, every mode


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_openssl_cli_file_is_cached_with_exactly_its_rows(mode: str, encoding: str, tmp_path: Path) -> None:
    args, kdf = MODES[mode]
    encrypted = openssl_encrypt(PLAINTEXT, args + ENCODINGS[encoding])
    path = tmp_path / "prices.csv.enc"
    path.write_bytes(encrypted)
    warehouse = Warehouse(base_dir=str(tmp_path / "warehouse"))
    cfg = cdn_config(**kdf)
    result = cache_price_file(
        path,
        supplier(cfg),
        passphrase=PASSPHRASE.encode(),
        warehouse=warehouse,
        cdn_state=CdnCacheState(base_dir=warehouse.base_dir),
        fetched_at=FETCHED_AT,
        known_currencies=KNOWN,
        quarantine_max_share=0.0,
        catalog_batches=4,
    )
    cached = warehouse.read(cache_key("delta"))
    assert offer_rows(cached) == expected_rows(PLAINTEXT)
    # The offers contract, then the layout: each row's batch of 4, sorted by it (docs/cdn_feed.md).
    assert cached.schema == pl.Schema({**OFFERS_SCHEMA, "batch": pl.String(), "catalog_batches": pl.Int32()})
    assert cached.get_column("batch").is_sorted() and set(cached.get_column("catalog_batches")) == {4}
    # The rejects come back to the asset, which publishes them as its quarantine output.
    assert result.quarantine.height == 0 and not warehouse.exists(quarantine_key("delta"))
    assert result.base64 is (encoding != "raw")
    # Wrong base64 setting stated explicitly fails loudly instead of decoding garbage.
    wrong_encoding = cdn_config(**kdf, base64="no" if encoding != "raw" else "yes")
    with pytest.raises(CdnFeedError):
        decrypt_file(encrypted, wrong_encoding)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_encrypt_openssl_matches_the_cli_byte_for_byte(mode: str) -> None:
    args, kdf = MODES[mode]
    salt = bytes.fromhex("0011223344556677")
    cli = openssl_encrypt(PLAINTEXT[:1000], args, salt=salt)
    ours = encrypt_openssl(PLAINTEXT[:1000], PASSPHRASE, salt=salt, **kdf)
    assert ours[:16] == b"Salted__" + salt
    assert ours == cli


@pytest.mark.parametrize("base64", ["wrapped", "one_line"])
def test_openssl_cli_decrypts_our_base64_output(base64: str) -> None:
    encrypted = encrypt_openssl(PLAINTEXT, PASSPHRASE, base64=base64)
    lines = encrypted.splitlines()
    if base64 == "wrapped":
        assert max(len(line) for line in lines) == 64
    else:
        assert len(lines) == 1
    args = ["-pbkdf2", "-a"] + (["-A"] if base64 == "one_line" else [])
    assert openssl_decrypt(encrypted, args) == PLAINTEXT


# ---------------------------------------------------------------- failures name their cause


def _assert_no_secret(error: BaseException) -> None:
    assert PASSPHRASE not in str(error)
    assert PASSPHRASE not in repr(error)


@pytest.mark.parametrize(
    ("configured", "why"),
    [
        ({"kdf": "pbkdf2", "digest": "sha256", "iterations": 10000}, "wrong passphrase"),
        ({"kdf": "evp_bytestokey", "digest": "sha256"}, "wrong KDF"),
        ({"kdf": "pbkdf2", "digest": "sha512", "iterations": 10000}, "wrong digest"),
        ({"kdf": "pbkdf2", "digest": "sha256", "iterations": 10001}, "wrong iteration count"),
    ],
)
def test_wrong_key_material_is_bad_decrypt(configured: dict[str, object], why: str) -> None:
    encrypted = openssl_encrypt(PLAINTEXT, ["-pbkdf2"], salt=bytes.fromhex("0102030405060708"))
    passphrase = "not the passphrase" if why == "wrong passphrase" else PASSPHRASE
    with pytest.raises(BadDecryptError) as caught:
        decrypt_file(encrypted, cdn_config(**configured), passphrase=passphrase)
    assert caught.value.cause == "bad_decrypt"
    assert str(caught.value).startswith("bad_decrypt:")
    _assert_no_secret(caught.value)


@pytest.mark.parametrize("encoding", ["raw", "base64"])
def test_truncated_file_is_named_truncated(encoding: str) -> None:
    encrypted = openssl_encrypt(PLAINTEXT, ["-pbkdf2", *ENCODINGS[encoding]])
    for cut in (len(encrypted) // 2 + 3, len(encrypted) - 7, 20):
        with pytest.raises(TruncatedError) as caught:
            decrypt_file(encrypted[:cut], cdn_config())
        assert caught.value.cause == "truncated"


def test_truncation_at_a_block_boundary_is_truncated_not_bad_decrypt() -> None:
    encrypted = openssl_encrypt(PLAINTEXT, ["-pbkdf2"])
    cut = 16 + ((len(encrypted) - 16) // 2 // 16) * 16
    with pytest.raises(TruncatedError, match="without PKCS#7 padding"):
        decrypt_file(encrypted[:cut], cdn_config())


@pytest.mark.parametrize(
    "data",
    [b"", b"Salted__", b"Salted__\x01\x02\x03\x04\x05\x06\x07\x08", b"U2FsdGVk"],
)
def test_files_too_short_for_any_ciphertext_are_truncated(data: bytes) -> None:
    with pytest.raises(TruncatedError):
        decrypt_file(data, cdn_config())


@pytest.mark.parametrize(
    ("data", "base64"),
    [
        (PLAINTEXT, "auto"),  # someone uploaded the plaintext
        (b"PK\x03\x04" + b"\x00" * 64, "auto"),  # a zip
        (b"Salted_X" + b"\x00" * 40, "no"),
        (b"U2FsdGVkX1*&^%$#@!" * 4, "yes"),  # not base64
    ],
)
def test_non_openssl_files_are_bad_magic(data: bytes, base64: str) -> None:
    with pytest.raises(BadMagicError) as caught:
        decrypt_file(data, cdn_config(base64=base64))
    assert caught.value.cause == "bad_magic"


def test_wrong_key_that_passes_the_padding_check_is_caught_by_the_header() -> None:
    plaintext = PLAINTEXT[:4000]
    salt = bytes.fromhex("a1a2a3a4a5a6a7a8")
    encrypted = encrypt_openssl(plaintext, PASSPHRASE, kdf="evp_bytestokey", salt=salt)
    cfg = cdn_config(kdf="evp_bytestokey", digest="sha256")
    # About 1 wrong passphrase in 256 decrypts to a valid-looking final pad byte: find one.
    lucky = None
    for attempt in range(20_000):
        candidate = f"wrong-{attempt}"
        try:
            garbage = decrypt_openssl(encrypted, candidate, kdf="evp_bytestokey", digest="sha256")
        except BadDecryptError:
            continue
        lucky = candidate
        break
    assert lucky is not None, "no wrong passphrase passed the padding check in 20000 tries"
    assert garbage != plaintext[: len(garbage)]  # decryption "succeeded" with garbage
    with pytest.raises(UnexpectedHeaderError) as caught:
        decrypt_file(encrypted, cfg, passphrase=lucky)
    assert caught.value.cause == "unexpected_header"


def test_unexpected_header_names_what_was_expected_and_found() -> None:
    plaintext = PLAINTEXT.replace(b"sku,price,currency,stock", b"id,cost,ccy,qty", 1)
    encrypted = encrypt_openssl(plaintext, PASSPHRASE)
    with pytest.raises(
        UnexpectedHeaderError, match="expected header 'sku,price,currency,stock', got 'id,cost"
    ):
        decrypt_file(encrypted, cdn_config())


def test_passphrase_never_appears_in_any_error(tmp_path: Path) -> None:
    encrypted = openssl_encrypt(PLAINTEXT, ["-pbkdf2"], salt=bytes.fromhex("0102030405060708"))
    failures = [
        lambda: decrypt_file(encrypted, cdn_config(), passphrase=PASSPHRASE + "x"),
        lambda: decrypt_file(encrypted[:100], cdn_config()),
        lambda: decrypt_file(b"nonsense" * 10, cdn_config()),
    ]
    for failure in failures:
        with pytest.raises(CdnFeedError) as caught:
            failure()
        _assert_no_secret(caught.value)
    assert PASSPHRASE not in repr(OpenSSLDecryptor(io.BytesIO(encrypted), PASSPHRASE))


# ---------------------------------------------------------------- streaming


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=0, max_value=3000),
    chunk=st.integers(min_value=1, max_value=700),
    base64=st.sampled_from(["no", "wrapped", "one_line"]),
)
def test_streamed_plaintext_equals_the_file_for_any_chunking(size: int, chunk: int, base64: str) -> None:
    plaintext = random.Random(size).randbytes(size)
    encrypted = encrypt_openssl(plaintext, PASSPHRASE, kdf="evp_bytestokey", base64=base64, salt=bytes(8))
    stream = OpenSSLDecryptor(io.BytesIO(encrypted), PASSPHRASE, kdf="evp_bytestokey", chunk_size=chunk)
    assert b"".join(bytes(piece) for piece in stream) == plaintext


def test_small_chunks_give_the_same_offers_as_one_chunk() -> None:
    encrypted = encrypt_openssl(PLAINTEXT, PASSPHRASE)
    whole = decrypt_file(encrypted, cdn_config())
    chunked = decrypt_file(encrypted, cdn_config(), chunk_size=4096)
    assert chunked.offers.equals(whole.offers)
    assert offer_rows(chunked.offers) == expected_rows(PLAINTEXT)


# ---------------------------------------------------------------- parsing


def parse(text: str, **overrides: object) -> tuple[pl.DataFrame, pl.DataFrame]:
    """parse_price_file over a text."""
    return parse_price_file(
        text.encode(),
        cdn_config(**overrides),
        supplier="delta",
        fetched_at=FETCHED_AT,
        known_currencies=KNOWN,
    )


def reasons(quarantine: pl.DataFrame) -> dict[str | None, str]:
    """sku -> reason."""
    return dict(quarantine.select("sku", "reason").iter_rows())


def test_bad_rows_are_quarantined_with_reasons() -> None:
    offers, quarantine = parse(
        "sku,price,currency,stock\n"
        "A,10.50,EUR,3\n"
        "B,abc,EUR,1\n"
        "C,-1,EUR,1\n"
        "D,5,XYZ,1\n"
        "E,5,EUR,many\n"
        "F,5,EUR,1,extra\n"
        "G,5,EUR,-4\n"
        ",5,EUR,1\n"
        "H,7,EUR,\n"
    )
    assert offer_rows(offers) == [("A", Decimal("10.5"), "EUR", 3), ("H", Decimal(7), "EUR", None)]
    assert dict(offers.select("sku", "in_stock").iter_rows()) == {"A": True, "H": True}
    got = reasons(quarantine)
    assert got["B"] == "price is not a decimal number"
    assert got["C"] == "price <= 0"
    assert got["D"] == "unknown currency"
    assert got["E"] == STOCK_NOT_INTEGER
    assert got["F"] == "expected 4 fields, got 5"
    assert got["G"] == "negative stock"
    assert got[None] == "missing sku"
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert quarantine.get_column("raw").str.contains('"line"').all()


def test_quoted_fields_crlf_bom_and_blank_lines_parse() -> None:
    offers, quarantine = parse(
        '\ufeffsku,price,currency,stock\r\n"A","1.25",EUR,2\r\n\r\nB,"2,50",EUR,1\r\nC,3,EUR,0'
    )
    assert offer_rows(offers) == [("A", Decimal("1.25"), "EUR", 2), ("C", Decimal(3), "EUR", 0)]
    assert dict(offers.select("sku", "in_stock").iter_rows())["C"] is False
    assert reasons(quarantine) == {"B": "price is not a decimal number"}


def test_undecodable_line_is_quarantined_not_fatal() -> None:
    data = b"sku,price,currency,stock\nA,1,EUR,1\nB,\xff\xfe,EUR,1\nC,2,EUR,1\n"
    offers, quarantine = parse_price_file(
        data, cdn_config(), supplier="delta", fetched_at=FETCHED_AT, known_currencies=KNOWN
    )
    assert sorted(offers.get_column("sku")) == ["A", "C"]
    assert quarantine.get_column("reason").to_list() == ["not valid UTF-8 text"]


def test_conflicting_duplicates_are_quarantined_identical_ones_collapse() -> None:
    offers, quarantine = parse(
        "sku,price,currency,stock\nA,1.00,EUR,1\nB,2,EUR,1\nA,1.0,EUR,1\nB,3,EUR,1\nC,4,EUR,1\n"
    )
    assert offer_rows(offers) == [("A", Decimal(1), "EUR", 1), ("C", Decimal(4), "EUR", 1)]
    assert quarantine.get_column("sku").to_list() == ["B", "B"]
    assert set(quarantine.get_column("reason")) == {"conflicting duplicate sku"}


def test_header_must_be_the_configured_one() -> None:
    with pytest.raises(UnexpectedHeaderError):
        parse("sku,price,stock,currency\nA,1,1,EUR\n")
    offers, _ = parse("sku;price;currency;stock\nA;1.5;EUR;1\n", delimiter=";")
    assert offers.get_column("sku").to_list() == ["A"]


# Equivalence of the fast screen and validate_offers, on generated files full of edge cases.
SKUS = st.sampled_from(["A", "B", "C", " A", "B ", "", "  ", "\u00a0C", "Ä"])
PRICES = st.sampled_from(
    ["1", "1.5", "1.50", " 2", "0", "0.00001", "-3", "abc", "", "1e3", "+4", "100000", "100000.0001", "7."]
)
CURRENCIES = st.sampled_from(["EUR", "eur", " USD", "XYZ", "", "GBP"])
STOCKS = st.sampled_from(["", "0", "5", " 6", "-1", "x", "5.0", "10000000", "10000001", "+3"])


def reference(rows: list[tuple[str, str, str, str]]) -> tuple[list[tuple], list[tuple]]:
    """Every row through validate_offers, stock text rejected the way the parser documents."""
    raw = pl.DataFrame(rows, schema=["sku", "price", "currency", "stock"], orient="row").with_columns(
        pl.all().replace("", None)
    )
    stock = pl.col("stock").str.strip_chars().cast(pl.Int64, strict=False)
    bad_stock = raw.filter(
        pl.col("stock").str.strip_chars().str.len_bytes().fill_null(0) > 0, stock.is_null()
    )
    good = raw.join(bad_stock, on=raw.columns, how="anti", nulls_equal=True)
    offers, quarantine = validate_offers(
        good.with_columns(stock=stock, in_stock=pl.lit(True), raw=pl.lit("{}")),
        supplier="delta",
        known_currencies=KNOWN,
        fetched_at=FETCHED_AT,
    )
    rejected = sorted(quarantine.select("sku", "reason").rows(), key=repr)
    rejected += [(sku, STOCK_NOT_INTEGER) for sku in bad_stock.get_column("sku")]
    return sorted(offers.drop("fetched_at").rows(), key=repr), sorted(rejected, key=repr)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(SKUS, PRICES, CURRENCIES, STOCKS), min_size=1, max_size=25))
def test_fast_screen_accepts_exactly_what_validate_offers_accepts(rows: list[tuple[str, ...]]) -> None:
    text = "sku,price,currency,stock\n" + "".join(",".join(row) + "\n" for row in rows)
    offers, quarantine = parse(text)
    want_offers, want_rejected = reference(rows)
    assert sorted(offers.drop("fetched_at").rows(), key=repr) == want_offers
    assert sorted(quarantine.select("sku", "reason").rows(), key=repr) == want_rejected


def test_key_derivation_matches_openssl_for_the_legacy_kdf() -> None:
    # `openssl enc -P` prints the salt, key and IV it derives.
    result = subprocess.run(
        [openssl(), "enc", "-aes-256-cbc", "-md", "md5", "-P", "-S", "0102030405060708", "-pass", "pass:x"],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = {
        name.strip(): value.strip()
        for name, value in (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    }
    key, iv = derive_key_iv(
        b"x", bytes.fromhex("0102030405060708"), kdf="evp_bytestokey", digest="md5", iterations=1
    )
    assert printed["key"].lower() == key.hex()
    assert printed["iv"].lower() == iv.hex()
