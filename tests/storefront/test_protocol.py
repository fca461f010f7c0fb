"""Pure parts of the push: idempotency keys, signatures, Retry-After, the diff and the ledger."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest

from pricing_assets.logic.ledger import (
    SYNC_SCHEMA,
    Pending,
    apply_acknowledged,
    compute_changes,
    empty_ledger,
    entry_frame,
    mark_pending,
    to_entries,
)
from resources.config import ConfigError
from resources.http_retry import RetryableError, parse_retry_after, retrying
from resources.storefront import (
    APPLIED,
    IN_DOUBT,
    REFUSED,
    PushChunk,
    PushOutcome,
    idempotency_key,
    resolve_adapter,
    sign,
)
from sandbox.storefront import verify_signature
from tests.storefront.conftest import targets

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ENTRY = {
    "sku": "A",
    "price": "9.9900",
    "currency": "EUR",
    "available": True,
    "supplier": "alpha",
    "version": 1,
}


def test_identical_content_keeps_its_idempotency_key():
    reordered = dict(reversed(list(ENTRY.items())))
    assert idempotency_key("batch-000", [ENTRY]) == idempotency_key("batch-000", [reordered])
    assert idempotency_key("batch-000", [ENTRY]) != idempotency_key("batch-001", [ENTRY])
    assert idempotency_key("batch-000", [ENTRY]) != idempotency_key(
        "batch-000", [{**ENTRY, "price": "9.9800"}]
    )
    assert idempotency_key("batch-000", [ENTRY]) != idempotency_key("batch-000", [{**ENTRY, "version": 2}])


def test_signature_round_trip_and_tampering():
    body = PushChunk.from_entries("batch-000", [ENTRY]).body
    header = sign("s3cret", body, 1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify_signature(body, header, "s3cret", now=1_800_000_010) is None
    assert verify_signature(body + b" ", header, "s3cret", now=1_800_000_010) == "X-Signature does not match"
    assert verify_signature(body, header, "other", now=1_800_000_010) == "X-Signature does not match"
    assert "tolerance" in verify_signature(body, header, "s3cret", now=1_800_001_000)
    assert "malformed" in verify_signature(body, "v1=abc", "s3cret")


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_every_client_waits_retry_after_capped_else_a_jittered_backoff():
    # The one wait of every HTTP client's retries (http_retry): the server's Retry-After, at most the
    # cap; without one, full jitter in [0, min(max, initial x 2^(attempt-1))].
    sleeps: list[float] = []

    def fail(errors: list[RetryableError]) -> None:
        for attempt in retrying(
            max_attempts=len(errors) + 1, initial=1.0, maximum=4.0, max_retry_after=10.0, sleep=sleeps.append
        ):
            with attempt:
                if errors:
                    raise errors.pop(0)

    fail([RetryableError("429", retry_after=7.0), RetryableError("503", retry_after=99.0)])
    assert sleeps == [7.0, 10.0]
    sleeps.clear()
    fail([RetryableError("502")] * 4)
    assert len(sleeps) == 4 and all(0 <= s <= bound for s, bound in zip(sleeps, [1, 2, 4, 4], strict=True))


def test_adapter_resolution(monkeypatch):
    monkeypatch.delenv("STOREFRONT_ADAPTER", raising=False)
    assert resolve_adapter() == "webhook"
    assert resolve_adapter(environ={"STOREFRONT_ADAPTER": "Shopify"}) == "shopify"
    assert resolve_adapter("webhook", environ={"STOREFRONT_ADAPTER": "shopify"}) == "webhook"
    with pytest.raises(ConfigError, match="STOREFRONT_ADAPTER"):
        resolve_adapter(environ={"STOREFRONT_ADAPTER": "ftp"})


def test_outcome_per_sku_status():
    outcome = PushOutcome("k", "partial", 200, 1, "bad", per_sku={"B": (REFUSED, "bad")})
    assert outcome.sku_status("A") == ("acknowledged", None)
    assert outcome.sku_status("B") == (REFUSED, "bad")
    assert PushOutcome("k", IN_DOUBT, 502, 3, "lost").sku_status("A") == (IN_DOUBT, "lost")
    assert PushOutcome("k", APPLIED, 200, 1).acknowledged


def acked(changes: pl.DataFrame, key: str) -> pl.DataFrame:
    return entry_frame(changes).with_columns(pl.lit(key).alias("idempotency_key"))


def ledger_of(frame: pl.DataFrame) -> pl.DataFrame:
    return apply_acknowledged(empty_ledger(), acked(compute_changes(frame, empty_ledger()), "key-1"), NOW)


def test_diff_covers_price_availability_and_supplier_only():
    base = targets(4)
    ledger = ledger_of(base)
    assert compute_changes(base, ledger).height == 0
    changed = base.with_columns(
        pl.when(pl.col("sku") == "SKU-000000")
        .then(pl.lit(Decimal("99")))
        .otherwise(pl.col("price"))
        .alias("price"),
        pl.when(pl.col("sku") == "SKU-000001")
        .then(pl.lit("beta"))
        .otherwise(pl.col("supplier"))
        .alias("supplier"),
        pl.when(pl.col("sku") == "SKU-000002")
        .then(pl.lit(Decimal("1")))
        .otherwise(pl.col("cost"))
        .alias("cost"),
    )
    diff = compute_changes(changed, ledger)
    assert diff.get_column("sku").to_list() == ["SKU-000000", "SKU-000001"]
    assert diff.get_column("version").to_list() == [2, 2]


def test_unavailable_keeps_last_price_and_clears_supplier():
    base = targets(2)
    ledger = ledger_of(base)
    gone = base.with_columns(
        pl.lit(False).alias("available"),
        pl.lit(None, dtype=pl.String).alias("supplier"),
        pl.lit(None).alias("price"),
    )
    diff = to_entries(compute_changes(gone, ledger))
    assert [(e["available"], e["supplier"], e["price"]) for e in diff] == [
        (False, None, "10.0000"),
        (False, None, "10.2500"),
    ]


def test_held_rows_are_never_in_the_diff():
    frame = targets(3).with_columns((pl.col("sku") == "SKU-000001").alias("held"))
    assert compute_changes(frame, empty_ledger()).get_column("sku").to_list() == ["SKU-000000", "SKU-000002"]


def test_entries_carry_decimal_strings():
    entries = to_entries(compute_changes(targets(7), empty_ledger()))
    assert entries[1]["price"] == "10.2500" and isinstance(entries[1]["price"], str)


def test_body_is_compact_json_of_the_protocol_fields():
    chunk = PushChunk.from_entries("batch-000", [ENTRY, {**ENTRY, "sku": "B", "supplier": None}])
    assert json.loads(chunk.body) == {
        "batch": "batch-000",
        "prices": [ENTRY, {**ENTRY, "sku": "B", "supplier": None}],
    }
    assert b" " not in chunk.body and chunk.body.startswith(b'{"batch":"batch-000","prices":[{"sku":"A"')
    assert chunk.skus() == ["A", "B"]


def test_ledger_keeps_newest_acknowledgement_and_marks_pending():
    ledger = ledger_of(targets(2))
    newer = acked(compute_changes(targets(1, price="20"), ledger), "key-2")
    ledger = apply_acknowledged(ledger, newer, NOW)
    row = ledger.filter(pl.col("sku") == "SKU-000000").row(0, named=True)
    assert (row["price"], row["version"], row["idempotency_key"]) == (Decimal("20.0000"), 2, "key-2")
    marked = mark_pending(ledger, {"SKU-000009": Pending(REFUSED, "1.5", "HTTP 400")})
    assert marked.schema == pl.Schema(SYNC_SCHEMA)
    fresh = marked.filter(pl.col("sku") == "SKU-000009").row(0, named=True)
    assert (fresh["price"], fresh["pending_status"], fresh["pending_price"]) == (
        None,
        REFUSED,
        Decimal("1.5"),
    )
    assert marked.filter(pl.col("pending_status").is_null()).height == 2
